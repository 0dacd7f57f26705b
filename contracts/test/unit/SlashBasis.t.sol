// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

/// @dev A slash depends only on what was at stake when the fault happened: money added to the deposit after it
/// (a top-up after a missed deadline, or while holding an equivocating pair) never raises it.
contract SlashBasisTest is Base {
    uint256 internal leaseId;
    /// @dev A one-hour, 8-GPU lease; the offer allows 30 days, so a top-up can raise the deposit 720-fold.
    uint256 internal deposit = PRICE * 8 * 3600;
    uint256 internal maxDeposit = PRICE * 8 * 30 days;

    function setUp() public override {
        super.setUp();
        leaseId = _open(8, 3600);
        vm.warp(block.timestamp + 600);
    }

    function _collateralOf(uint256 amount) internal pure returns (uint256) {
        return amount * COLLATERAL_BPS / 10_000;
    }

    /// @dev The consumer tries to top up to the offer's maximum (allowed or not) right before `resolve`.
    function _tryTopUpToMax() internal {
        vm.prank(consumer);
        try escrow.topUp(leaseId, maxDeposit - deposit) {} catch {}
    }

    function test_ResolveLiveness_SlashOnDepositAtChallenge() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        uint256 stakeBefore = staking.stakeOf(provider);
        _tryTopUpToMax();
        vm.prank(consumer);
        escrow.resolveLiveness(leaseId);
        uint256 expected = _collateralOf(deposit) * LIVENESS_SLASH_BPS / 10_000;
        assertEq(stakeBefore - staking.stakeOf(provider), expected, "slash");
    }

    function test_RevertWhen_TopUpAfterMissedDeadline() public {
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ChallengePending.selector, leaseId));
        escrow.topUp(leaseId, PRICE * 8 * 60);
    }

    /// @dev Anyone may pay a top-up; nobody can while a challenge is pending.
    function test_RevertWhen_TopUpWhileChallengePending() public {
        _fund(stranger, 1 ether);
        vm.prank(stranger);
        token.approve(address(escrow), 1 ether);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ChallengePending.selector, leaseId));
        escrow.topUp(leaseId, PRICE * 8 * 60);
    }

    function test_ReportEquivocation_SlashOnDepositAtOpen() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        uint256 stakeBefore = staking.stakeOf(provider);
        _tryTopUpToMax();
        vm.prank(consumer);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        assertEq(stakeBefore - staking.stakeOf(provider), _collateralOf(deposit), "slash");
    }

    /// @dev A top-up made before the challenge was at stake when the deadline was missed: it counts.
    function test_ResolveLiveness_CountsTopUpBeforeChallenge() public {
        uint256 extra = PRICE * 8 * 3600;
        vm.prank(consumer);
        escrow.topUp(leaseId, extra);
        vm.prank(consumer);
        escrow.challengeLiveness(leaseId);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        uint256 stakeBefore = staking.stakeOf(provider);
        escrow.resolveLiveness(leaseId);
        uint256 expected = _collateralOf(deposit + extra) * LIVENESS_SLASH_BPS / 10_000;
        assertEq(stakeBefore - staking.stakeOf(provider), expected, "slash");
    }

    /// @dev The collateral of top-ups that the equivocation slash left alone is unlocked at finalization.
    function test_ReportEquivocation_TopUpCollateralUnlockedAtFinalize() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(leaseId, 4, 1000);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(leaseId, 4, 1200);
        bytes memory sigA = _signCp(providerKey, a);
        bytes memory sigB = _signCp(providerKey, b);
        uint256 extra = PRICE * 8 * 7200;
        vm.prank(consumer);
        escrow.topUp(leaseId, extra);
        vm.prank(consumer);
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.collateral, _collateralOf(deposit + extra) - _collateralOf(deposit));
        assertEq(staking.lockedStake(provider), l.collateral);
        // Nothing of the opening deposit's collateral is left to slash.
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NothingToSlash.selector, leaseId));
        escrow.reportEquivocation(leaseId, a, sigA, b, sigB);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(staking.lockedStake(provider), 0);
    }
}
