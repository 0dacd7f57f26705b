// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";
import {BlocklistToken} from "../mocks/BlocklistToken.sol";

/// @dev No recipient can block a lease's end: a refund or slash share whose transfer reverts (here an issuer
/// blocklist) is credited to the recipient, who withdraws it later.
contract BlockedRecipientsTest is Base {
    uint256 internal leaseId;
    uint256 internal deposit = PRICE * 2 * 3600;

    function _deployToken() internal override returns (DevToken) {
        return new BlocklistToken();
    }

    function _blocklist(address account, bool value) internal {
        BlocklistToken(address(token)).setBlocked(account, value);
    }

    function setUp() public override {
        super.setUp();
        leaseId = _open(2, 3600);
        vm.warp(block.timestamp + 1000);
    }

    function test_FinalizeLease_WhenConsumerBlocklisted() public {
        _settle(leaseId, 1, 1000);
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        _blocklist(consumer, true);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        uint256 refund = deposit - PRICE * 1000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.RefundCredited(leaseId, consumer, refund);
        escrow.finalizeLease(leaseId);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Finalized));
        assertEq(staking.lockedStake(provider), 0);
        assertEq(escrow.offerGpusInUse(l.offerHash), 0);
        assertEq(escrow.accruedFees(), PRICE * 1000 * FEE_BPS / 10_000);
        assertEq(escrow.refunds(consumer), refund);

        // The consumer withdraws once the blocklist lets it.
        vm.prank(consumer);
        vm.expectRevert();
        escrow.withdrawRefund();
        _blocklist(consumer, false);
        uint256 before = token.balanceOf(consumer);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.RefundWithdrawn(consumer, refund);
        vm.prank(consumer);
        assertEq(escrow.withdrawRefund(), refund);
        assertEq(token.balanceOf(consumer), before + refund);
        assertEq(escrow.refunds(consumer), 0);
        vm.prank(consumer);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_NothingToWithdraw.selector);
        escrow.withdrawRefund();
    }

    /// @dev A recipient that accepts the transfer gets the refund pushed, with no credit.
    function test_FinalizeLease_PushesRefundToWillingRecipient() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        uint256 before = token.balanceOf(consumer);
        escrow.finalizeLease(leaseId);
        assertEq(token.balanceOf(consumer), before + deposit);
        assertEq(escrow.refunds(consumer), 0);
    }

    function test_ResolveLiveness_WhenConsumerBlocklisted() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        _blocklist(consumer, true);
        uint256 slashAmount = deposit * COLLATERAL_BPS / 10_000 * LIVENESS_SLASH_BPS / 10_000;
        uint256 toWronged = slashAmount * WRONGED_BPS / 10_000;
        uint256 toFinder = slashAmount * FINDER_BPS / 10_000;
        vm.expectEmit(address(staking));
        emit IProviderStaking.SlashProceedsCredited(consumer, toWronged);
        vm.expectEmit(address(staking));
        emit IProviderStaking.SlashProceedsCredited(consumer, toFinder);
        escrow.resolveLiveness(leaseId);
        assertEq(uint8(escrow.getLease(leaseId).status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(staking.slashProceeds(consumer), toWronged + toFinder);
        assertEq(token.balanceOf(stakingTreasury), slashAmount - toWronged - toFinder);

        _blocklist(consumer, false);
        uint256 before = token.balanceOf(consumer);
        vm.expectEmit(address(staking));
        emit IProviderStaking.SlashProceedsWithdrawn(consumer, toWronged + toFinder);
        vm.prank(consumer);
        assertEq(staking.withdrawSlashProceeds(), toWronged + toFinder);
        assertEq(token.balanceOf(consumer), before + toWronged + toFinder);
        vm.prank(consumer);
        vm.expectRevert(IProviderStaking.ProviderStaking_NothingToWithdraw.selector);
        staking.withdrawSlashProceeds();
    }

    function test_ReportEquivocation_WhenStakingTreasuryBlocklisted() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        _blocklist(stakingTreasury, true);
        vm.prank(stranger);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        assertEq(escrow.getLease(leaseId).collateral, 0);
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        uint256 toTreasury = collateral - collateral * WRONGED_BPS / 10_000 - collateral * FINDER_BPS / 10_000;
        assertEq(staking.slashProceeds(stakingTreasury), toTreasury);
        assertEq(token.balanceOf(stranger), collateral * FINDER_BPS / 10_000);
        // The lease still finalizes.
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(staking.lockedStake(provider), 0);
    }

    /// @dev A provider that missed a deadline and closes cannot be saved by a blocklisted consumer either.
    function test_CloseAfterMissedDeadline_WhenConsumerBlocklisted() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(escrow.getLease(leaseId).endsAt);
        _blocklist(consumer, true);
        uint256 stakeBefore = staking.stakeOf(provider);
        vm.prank(provider);
        escrow.closeLease(leaseId);
        assertEq(
            stakeBefore - staking.stakeOf(provider), deposit * COLLATERAL_BPS / 10_000 * LIVENESS_SLASH_BPS / 10_000
        );
    }
}
