// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

contract CloseFinalizeTest is Base {
    uint256 internal leaseId;
    uint256 internal deposit = PRICE * 2 * 3600;

    function setUp() public override {
        super.setUp();
        leaseId = _open(2, 3600);
    }

    function test_CloseLease_ByConsumer() public {
        vm.warp(block.timestamp + 100);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseClosed(leaseId, provider, consumer, consumer, uint64(block.timestamp));
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Closed));
        assertEq(l.closedAt, block.timestamp);
    }

    function test_CloseLease_ByProviderAfterEnd() public {
        vm.warp(block.timestamp + 3600);
        vm.prank(provider);
        escrow.closeLease(leaseId);
        assertEq(uint8(escrow.getLease(leaseId).status), uint8(ILeaseEscrow.LeaseStatus.Closed));
    }

    function test_RevertWhen_ProviderClosesBeforeEnd() public {
        uint64 endsAt = uint64(block.timestamp + 3600);
        vm.warp(endsAt - 1);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotEnded.selector, leaseId, endsAt));
        escrow.closeLease(leaseId);
    }

    function test_RevertWhen_StrangerCloses() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, leaseId, stranger));
        escrow.closeLease(leaseId);
    }

    function test_RevertWhen_CloseTwice() public {
        vm.startPrank(consumer);
        escrow.closeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, leaseId));
        escrow.closeLease(leaseId);
        vm.stopPrank();
    }

    function test_FinalizeLease() public {
        vm.warp(block.timestamp + 1000);
        _settle(leaseId, 1, 1500);
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        uint256 refund = deposit - PRICE * 1500;
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        uint256 balBefore = token.balanceOf(consumer);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseFinalized(leaseId, provider, consumer, refund, collateral);
        vm.prank(stranger);
        escrow.finalizeLease(leaseId);
        assertEq(token.balanceOf(consumer), balBefore + refund);
        assertEq(staking.lockedStake(provider), 0);
        assertEq(uint8(escrow.getLease(leaseId).status), uint8(ILeaseEscrow.LeaseStatus.Finalized));
        assertEq(escrow.getLease(leaseId).collateral, 0);
        // The lease's fees become withdrawable at finalization.
        assertEq(escrow.accruedFees(), PRICE * 1500 * FEE_BPS / 10_000);
        assertEq(token.balanceOf(address(escrow)), escrow.earnings(provider) + escrow.accruedFees());
    }

    function test_RevertWhen_FinalizeWithinSettlementWindow() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        uint64 windowEnd = uint64(block.timestamp + SETTLEMENT_WINDOW);
        vm.warp(windowEnd - 1);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_SettlementWindowOpen.selector, leaseId, windowEnd)
        );
        escrow.finalizeLease(leaseId);
    }

    function test_RevertWhen_FinalizeOpenLease() public {
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotClosed.selector, leaseId));
        escrow.finalizeLease(leaseId);
    }

    function test_RevertWhen_FinalizeTwice() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseFinalized.selector, leaseId));
        escrow.finalizeLease(leaseId);
    }

    function test_RevertWhen_FinalizeUnknownLease() public {
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotFound.selector, 42));
        escrow.finalizeLease(42);
    }

    function test_RevertWhen_FinalizeWithPendingClaim() public {
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        escrow.claim(leaseId, cp, sig);
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_ClaimPending.selector, leaseId));
        escrow.finalizeLease(leaseId);
        escrow.finalizeClaim(leaseId);
        escrow.finalizeLease(leaseId);
    }
}
