// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

contract SilentPartiesTest is Base {
    uint256 internal leaseId;
    uint256 internal deposit = PRICE * 2 * 3600;

    function setUp() public override {
        super.setUp();
        leaseId = _open(2, 3600);
        vm.warp(block.timestamp + 1000);
    }

    function _claim(uint64 seq, uint64 cum) internal {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, seq, cum);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        escrow.claim(leaseId, cp, sig);
    }

    /// @dev Tops the lease up by three hours, so that it outlasts a challenge cooldown.
    function _extend() internal {
        vm.prank(consumer);
        escrow.topUp(leaseId, PRICE * 2 * 3 hours);
    }

    /*////////////////////////////// claim //////////////////////////////*/

    function test_Claim_FinalizedAfterWindow() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 3, 1800);
        bytes memory sig = _signCp(providerKey, cp);
        uint64 readyAt = uint64(block.timestamp + DISPUTE_WINDOW);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.UsageClaimed(leaseId, provider, consumer, 3, 1800, readyAt);
        vm.prank(provider);
        escrow.claim(leaseId, cp, sig);
        assertEq(escrow.getClaim(leaseId).readyAt, readyAt);

        vm.warp(readyAt);
        uint256 amount = PRICE * 1800;
        uint256 fee = amount * FEE_BPS / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.ClaimFinalized(leaseId, provider, consumer, 3, 1800, amount, fee);
        escrow.finalizeClaim(leaseId);
        assertEq(escrow.earnings(provider), amount - fee);
        assertEq(escrow.accruedFees(), 0);
        assertEq(escrow.getLease(leaseId).lastSeq, 3);
        assertEq(escrow.getClaim(leaseId).readyAt, 0);
    }

    function test_Claim_MootAfterLaterSettlement() public {
        _claim(1, 500);
        _settle(leaseId, 2, 1000);
        vm.warp(block.timestamp + DISPUTE_WINDOW);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.ClaimFinalized(leaseId, provider, consumer, 1, 500, 0, 0);
        escrow.finalizeClaim(leaseId);
        assertEq(escrow.getLease(leaseId).settledGpuSeconds, 1000);
    }

    function test_RevertWhen_ClaimNotProvider() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotProvider.selector, leaseId, consumer));
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimPending() public {
        _claim(1, 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 200);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ClaimPending.selector, leaseId));
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimNothing() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 0);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NothingToClaim.selector, leaseId));
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimExceedsElapsed() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 2001);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, leaseId, 2001, 2000)
        );
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimLeaseNotFound() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(7, 1, 1);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotFound.selector, 7));
        escrow.claim(7, cp, sig);
    }

    function test_RevertWhen_ClaimCheckpointOtherLease() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(7, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_CheckpointLeaseMismatch.selector, leaseId, 7));
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimStaleSeq() public {
        _settle(leaseId, 2, 500);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 600);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_StaleSeq.selector, leaseId, 2, 2));
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimUsageDecreased() public {
        _settle(leaseId, 1, 500);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 400);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageDecreased.selector, leaseId, 400, 500));
        escrow.claim(leaseId, cp, sig);
    }

    /// @dev On a closed lease the claimable usage stops at the close time, not at the claim time.
    function test_RevertWhen_ClaimClosedLeaseBeyondCloseTime() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 2001);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, leaseId, 2001, 2000)
        );
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimAfterSettlementWindow() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        uint64 windowEnd = uint64(block.timestamp + SETTLEMENT_WINDOW);
        vm.warp(windowEnd);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_SettlementWindowClosed.selector, leaseId, windowEnd)
        );
        escrow.claim(leaseId, cp, sig);
    }

    function test_RevertWhen_ClaimFinalizedLease() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseFinalized.selector, leaseId));
        escrow.claim(leaseId, cp, sig);
    }

    /// @dev A settlement with a lower seq but more usage than the claim also makes the claim moot.
    function test_FinalizeClaim_MootWhenUsageBelowSettled() public {
        _claim(5, 500);
        _settle(leaseId, 2, 1000);
        vm.warp(block.timestamp + DISPUTE_WINDOW);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.ClaimFinalized(leaseId, provider, consumer, 5, 500, 0, 0);
        escrow.finalizeClaim(leaseId);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.settledGpuSeconds, 1000);
        assertEq(l.lastSeq, 2);
    }

    function test_RevertWhen_FinalizeClaimEarly() public {
        _claim(1, 100);
        uint64 readyAt = uint64(block.timestamp + DISPUTE_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_DisputeWindowOpen.selector, leaseId, readyAt));
        escrow.finalizeClaim(leaseId);
    }

    function test_RevertWhen_FinalizeClaimNone() public {
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NoClaim.selector, leaseId));
        escrow.finalizeClaim(leaseId);
    }

    /*////////////////////////////// dispute //////////////////////////////*/

    function test_Dispute_LaterSeqLowerUsage() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 3, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.ClaimDisputed(leaseId, provider, consumer, 2, 3);
        vm.prank(consumer);
        escrow.dispute(leaseId, ev, sig);
        assertEq(escrow.getClaim(leaseId).readyAt, 0);
    }

    function test_Dispute_SameSeqLowerUsage() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 2, 1400);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(consumer);
        escrow.dispute(leaseId, ev, sig);
        assertEq(escrow.getClaim(leaseId).readyAt, 0);
    }

    function test_RevertWhen_DisputeEvidenceConsistent() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 1, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidEvidence.selector, leaseId));
        escrow.dispute(leaseId, ev, sig);
    }

    function test_RevertWhen_DisputeEvidenceNotSignedByProvider() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 3, 900);
        bytes memory sig = _signCp(consumerKey, ev);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.dispute(leaseId, ev, sig);
    }

    function test_RevertWhen_DisputeAfterWindow() public {
        _claim(2, 1500);
        uint64 readyAt = uint64(block.timestamp + DISPUTE_WINDOW);
        vm.warp(readyAt);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 3, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_DisputeWindowClosed.selector, leaseId, readyAt));
        escrow.dispute(leaseId, ev, sig);
    }

    function test_RevertWhen_DisputeNoClaim() public {
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 3, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NoClaim.selector, leaseId));
        escrow.dispute(leaseId, ev, sig);
    }

    function test_RevertWhen_DisputeNotConsumer() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 3, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, leaseId, stranger));
        escrow.dispute(leaseId, ev, sig);
    }

    function test_RevertWhen_DisputeCheckpointOtherLease() public {
        _claim(2, 1500);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(7, 3, 900);
        bytes memory sig = _signCp(providerKey, ev);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_CheckpointLeaseMismatch.selector, leaseId, 7));
        escrow.dispute(leaseId, ev, sig);
    }

    /*////////////////////////////// liveness //////////////////////////////*/

    function test_Liveness_Answered() public {
        uint64 deadline = uint64(block.timestamp + LIVENESS_WINDOW);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessChallenged(leaseId, provider, consumer, deadline);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        assertEq(escrow.getLease(leaseId).livenessDeadline, deadline);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessAnswered(leaseId, provider, consumer);
        vm.prank(provider);
        escrow.answerLiveness(leaseId);
        assertEq(escrow.getLease(leaseId).livenessDeadline, 0);
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NoChallenge.selector, leaseId));
        escrow.resolveLiveness(leaseId);
    }

    function test_Liveness_Unanswered_SlashesAndCloses() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        uint256 slashAmount = collateral * LIVENESS_SLASH_BPS / 10_000;
        uint256 consumerBefore = token.balanceOf(consumer);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessResolved(leaseId, provider, consumer, slashAmount);
        vm.prank(stranger);
        escrow.resolveLiveness(leaseId);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(l.collateral, collateral - slashAmount);
        uint256 toConsumer = slashAmount * WRONGED_BPS / 10_000 + slashAmount * FINDER_BPS / 10_000;
        assertEq(token.balanceOf(consumer), consumerBefore + toConsumer);
        assertEq(staking.lockedStake(provider), collateral - slashAmount);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(staking.lockedStake(provider), 0);
    }

    function test_RevertWhen_ChallengeNotConsumer() public {
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, leaseId, provider));
        escrow.challengeLiveness(leaseId);
    }

    function test_RevertWhen_ChallengePending() public {
        vm.startPrank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ChallengePending.selector, leaseId));
        escrow.challengeLiveness(leaseId);
        vm.stopPrank();
    }

    function test_RevertWhen_ChallengeAfterEnd() public {
        uint64 endsAt = uint64(block.timestamp - 1000 + 3600);
        vm.warp(endsAt);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseEnded.selector, leaseId, endsAt));
        escrow.challengeLiveness(leaseId);
    }

    function test_RevertWhen_ChallengeClosedLease() public {
        vm.startPrank(consumer);
        escrow.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.challengeLiveness(leaseId);
        vm.stopPrank();
    }

    function test_RevertWhen_AnswerLate() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        uint64 deadline = uint64(block.timestamp + LIVENESS_WINDOW);
        vm.warp(deadline);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LivenessWindowClosed.selector, leaseId, deadline)
        );
        escrow.answerLiveness(leaseId);
    }

    function test_RevertWhen_AnswerNotProvider() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotProvider.selector, leaseId, stranger));
        escrow.answerLiveness(leaseId);
    }

    function test_RevertWhen_AnswerNoChallenge() public {
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NoChallenge.selector, leaseId));
        escrow.answerLiveness(leaseId);
    }

    function test_RevertWhen_ResolveEarly() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        uint64 deadline = uint64(block.timestamp + LIVENESS_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LivenessWindowOpen.selector, leaseId, deadline));
        escrow.resolveLiveness(leaseId);
    }

    /// @dev Settlements rewrite the lease state word; a pending challenge's deadline survives them (top-ups are
    /// refused while it is pending, see SlashBasis.t.sol).
    function test_Liveness_DeadlineSurvivesSettle() public {
        uint64 deadline = uint64(block.timestamp + LIVENESS_WINDOW);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        _settle(leaseId, 1, 500);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.livenessDeadline, deadline);
        assertEq(l.closedAt, 0);
        assertEq(l.settledGpuSeconds, 500);
        vm.prank(provider);
        escrow.answerLiveness(leaseId);
        assertEq(escrow.getLease(leaseId).livenessDeadline, 0);
    }

    function test_Liveness_ChallengeAgainAfterCooldown() public {
        _extend();
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.prank(provider);
        escrow.answerLiveness(leaseId);
        uint64 cooldownEnd = uint64(block.timestamp + LIVENESS_WINDOW * escrow.CHALLENGE_COOLDOWN_WINDOWS());
        assertEq(escrow.challengeCooldownEnd(leaseId), cooldownEnd);
        vm.warp(cooldownEnd);
        uint64 deadline = uint64(block.timestamp + LIVENESS_WINDOW);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        assertEq(escrow.getLease(leaseId).livenessDeadline, deadline);
        assertEq(escrow.challengeCooldownEnd(leaseId), 0);
    }

    /// @dev Closing the lease ends a pending challenge: the close time replaces the deadline.
    function test_Liveness_CloseEndsChallenge() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + 60);
        uint256 closedAt = block.timestamp;
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.livenessDeadline, 0);
        assertEq(l.closedAt, closedAt);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.answerLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.resolveLiveness(leaseId);
    }

    function test_RevertWhen_ResolveNoChallenge() public {
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NoChallenge.selector, leaseId));
        escrow.resolveLiveness(leaseId);
    }

    /// @dev A lease closed by a liveness resolution accrues its fees (claimed usage included) at finalization.
    function test_Liveness_FeesAccruedAtFinalize() public {
        _settle(leaseId, 1, 600);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        escrow.resolveLiveness(leaseId);
        _claim(2, 900);
        vm.warp(block.timestamp + DISPUTE_WINDOW);
        escrow.finalizeClaim(leaseId);
        assertEq(escrow.accruedFees(), 0);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        uint256 fees = PRICE * 900 * FEE_BPS / 10_000;
        assertEq(escrow.accruedFees(), fees);
        assertEq(escrow.earnings(provider), PRICE * 900 - fees);
        assertEq(token.balanceOf(address(escrow)), escrow.earnings(provider) + fees);
    }

    /*////////////////////////////// equivocation //////////////////////////////*/

    /// @dev A lease closed by an equivocation report accrues its fees at finalization.
    function test_ReportEquivocation_FeesAccruedAtFinalize() public {
        _settle(leaseId, 1, 800);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        assertEq(escrow.accruedFees(), 0);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        uint256 fees = PRICE * 800 * FEE_BPS / 10_000;
        assertEq(escrow.accruedFees(), fees);
        assertEq(token.balanceOf(address(escrow)), escrow.earnings(provider) + fees);
    }

    function test_ReportEquivocation() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.EquivocationReported(leaseId, provider, consumer, stranger, 4, collateral);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        assertEq(uint8(escrow.getLease(leaseId).status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(escrow.getLease(leaseId).collateral, 0);
        assertEq(staking.lockedStake(provider), 0);
        assertEq(token.balanceOf(stranger), collateral * FINDER_BPS / 10_000);
        assertEq(
            token.balanceOf(stakingTreasury),
            collateral - collateral * FINDER_BPS / 10_000 - collateral * WRONGED_BPS / 10_000
        );
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NothingToSlash.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
    }

    function test_RevertWhen_EquivocationIdentical() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        bytes memory sigA = _signCp(providerKey, a);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotEquivocation.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, a, sigA);
    }

    function test_RevertWhen_EquivocationDifferentSeq() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 5, 1000);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotEquivocation.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
    }

    function test_RevertWhen_EquivocationOtherLease() public {
        uint256 other = _open(1, 3600);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(other, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(other, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotEquivocation.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
    }

    function test_RevertWhen_EquivocationForged() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(consumerKey, b);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
    }

    function test_RevertWhen_EquivocationFinalized() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseFinalized.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
    }

    /// @dev On a lease already closed, a report slashes but keeps the close time (and so the settlement window).
    function test_ReportEquivocation_ClosedLeaseKeepsCloseTime() public {
        uint256 closedAt = block.timestamp;
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(l.closedAt, closedAt);
        assertEq(l.collateral, 0);
        vm.warp(closedAt + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
    }

    /// @dev A report during a liveness challenge closes the lease, which ends the challenge.
    function test_ReportEquivocation_DuringChallengeClosesLease() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(l.closedAt, block.timestamp);
        assertEq(l.livenessDeadline, 0);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.resolveLiveness(leaseId);
    }

    function test_RevertWhen_EquivocationLeaseNotFound() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(7, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(7, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotFound.selector, 7));
        escrow.reportEquivocation(7, a, sigA, b, sigB);
    }

    /*////////////////////////////// fault rules //////////////////////////////*/

    /// @dev A disputed checkpoint cannot be claimed again: the consumer need not win every window forever.
    function test_RevertWhen_ClaimResubmittedAfterDispute() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 3, 1800);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        escrow.claim(leaseId, cp, sig);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(leaseId, 5, 900);
        bytes memory evSig = _signCp(providerKey, ev);
        vm.prank(consumer);
        escrow.dispute(leaseId, ev, evSig);
        assertEq(escrow.disputedSeq(leaseId), 5);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_SeqDisputed.selector, leaseId, 3, 5));
        escrow.claim(leaseId, cp, sig);
        // Nor any other checkpoint up to the evidence's seq; a later one can be claimed (and the floor outlives it).
        ILeaseEscrow.UsageCheckpoint memory same = _cp(leaseId, 5, 1000);
        bytes memory sameSig = _signCp(providerKey, same);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_SeqDisputed.selector, leaseId, 5, 5));
        escrow.claim(leaseId, same, sameSig);
        _claim(6, 900);
        vm.warp(block.timestamp + DISPUTE_WINDOW);
        escrow.finalizeClaim(leaseId);
        assertEq(escrow.getLease(leaseId).settledGpuSeconds, 900);
        assertEq(escrow.disputedSeq(leaseId), 5);
    }

    /// @dev A provider that missed a liveness deadline is slashed even if it closes the lease before anyone
    /// resolves the challenge.
    function test_Liveness_MissedDeadlineSlashedWhenProviderCloses() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(escrow.getLease(leaseId).endsAt);
        uint256 stakeBefore = staking.stakeOf(provider);
        uint256 slashAmount = deposit * COLLATERAL_BPS / 10_000 * LIVENESS_SLASH_BPS / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseClosed(leaseId, provider, consumer, provider, uint64(block.timestamp));
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessResolved(leaseId, provider, consumer, slashAmount);
        vm.prank(provider);
        escrow.closeLease(leaseId);
        assertEq(stakeBefore - staking.stakeOf(provider), slashAmount, "slash");
        assertEq(escrow.getLease(leaseId).collateral, deposit * COLLATERAL_BPS / 10_000 - slashAmount);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.resolveLiveness(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(staking.lockedStake(provider), 0);
    }

    function test_Liveness_MissedDeadlineSlashedWhenConsumerCloses() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        uint256 slashAmount = deposit * COLLATERAL_BPS / 10_000 * LIVENESS_SLASH_BPS / 10_000;
        uint256 consumerBefore = token.balanceOf(consumer);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessResolved(leaseId, provider, consumer, slashAmount);
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        uint256 toConsumer = slashAmount * WRONGED_BPS / 10_000 + slashAmount * FINDER_BPS / 10_000;
        assertEq(token.balanceOf(consumer), consumerBefore + toConsumer);
    }

    /// @dev An equivocation report that closes the lease after a missed deadline slashes both faults.
    function test_ReportEquivocation_AfterMissedDeadlineSlashesBoth() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        uint256 livenessSlash = collateral * LIVENESS_SLASH_BPS / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LivenessResolved(leaseId, provider, consumer, livenessSlash);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.EquivocationReported(leaseId, provider, consumer, stranger, 4, collateral - livenessSlash);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        assertEq(staking.stakeOf(provider), 100_000 ether - collateral);
        assertEq(staking.lockedStake(provider), 0);
    }

    /// @dev Challenges are bounded: right after an answer the consumer cannot challenge again.
    function test_RevertWhen_ChallengeRightAfterAnswer() public {
        _extend();
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.prank(provider);
        escrow.answerLiveness(leaseId);
        uint64 cooldownEnd = uint64(block.timestamp + LIVENESS_WINDOW * escrow.CHALLENGE_COOLDOWN_WINDOWS());
        vm.warp(cooldownEnd - 1);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ChallengeCooldown.selector, leaseId, cooldownEnd)
        );
        escrow.challengeLiveness(leaseId);
        // The cooldown is not a challenge: it neither blocks top-ups nor shows as a deadline.
        assertEq(escrow.getLease(leaseId).livenessDeadline, 0);
        vm.prank(consumer);
        escrow.topUp(leaseId, PRICE * 2 * 60);
    }
}
