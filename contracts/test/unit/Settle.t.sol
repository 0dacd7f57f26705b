// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

contract SettleTest is Base {
    uint256 internal leaseId;

    function _openOffer(ILeaseEscrow.Offer memory o, uint32 gpus, uint256 duration) internal returns (uint256) {
        bytes memory sig = _signOffer(o);
        vm.prank(consumer);
        return escrow.openLease(o, sig, gpus, o.pricePerGpuSecond * gpus * duration);
    }

    function setUp() public override {
        super.setUp();
        leaseId = _open(2, 3600);
        vm.warp(block.timestamp + 600);
    }

    function test_Settle() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 1000);
        bytes memory sig = _signCp(providerKey, cp);
        uint256 amount = PRICE * 1000;
        uint256 fee = amount * FEE_BPS / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(leaseId, provider, consumer, 1, 1000, amount, fee);
        vm.prank(consumer);
        escrow.settle(leaseId, cp, sig);
        assertEq(escrow.earnings(provider), amount - fee);
        // The fee stays in the escrow until the lease is finalized.
        assertEq(escrow.accruedFees(), 0);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.paid, amount);
        assertEq(l.settledGpuSeconds, 1000);
        assertEq(l.lastSeq, 1);
    }

    function test_Settle_Incremental() public {
        _settle(leaseId, 1, 500);
        _settle(leaseId, 3, 1200);
        assertEq(escrow.getLease(leaseId).paid, PRICE * 1200);
        uint256 fees = PRICE * 1200 * FEE_BPS / 10_000;
        assertEq(escrow.accruedFees(), 0);
        assertEq(escrow.earnings(provider), PRICE * 1200 - fees);
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(escrow.accruedFees(), fees);
    }

    /// @dev Fees are feeCum(new) - feeCum(old) with feeCum(x) = floor(x * price * feeBps / 10_000): rounding is
    /// per lease, so the fees of a lease do not depend on how its usage was split into settlements.
    function test_Settle_FeeRoundingPerLease() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.pricePerGpuSecond = 7; // 7 * 250 / 10_000 = 0.175 per GPU-second
        uint256 id = _openOffer(o, 1, 3600);
        vm.warp(block.timestamp + 100);
        // feeCum(3) = floor(0.525) = 0, feeCum(6) = floor(1.05) = 1, feeCum(10) = floor(1.75) = 1; rounding each
        // settlement's fee down on its own would have charged 0 in total.
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(id, provider, consumer, 1, 3, 21, 0);
        _settle(id, 1, 3);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(id, provider, consumer, 2, 6, 21, 1);
        _settle(id, 2, 6);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(id, provider, consumer, 3, 10, 28, 0);
        _settle(id, 3, 10);
        assertEq(escrow.earnings(provider), 70 - 1);
        vm.prank(consumer);
        escrow.closeLease(id);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(id);
        assertEq(escrow.accruedFees(), 1);
        // What is left beside the setUp lease's untouched deposit: the provider's 69 and the treasury's 1.
        assertEq(token.balanceOf(address(escrow)), PRICE * 2 * 3600 + 70);
    }

    /// @dev A lease keeps the fee rate of its open; `setFee` applies to leases opened afterwards.
    function test_Settle_FeeFixedAtOpen() public {
        vm.prank(owner);
        escrow.setFee(1_000);
        uint256 id2 = _open(2, 3600);
        vm.warp(block.timestamp + 100);
        uint256 fee1 = PRICE * 1000 * FEE_BPS / 10_000;
        uint256 fee2 = PRICE * 100 * 1_000 / 10_000;
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(leaseId, provider, consumer, 1, 1000, PRICE * 1000, fee1);
        _settle(leaseId, 1, 1000);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(id2, provider, consumer, 1, 100, PRICE * 100, fee2);
        _settle(id2, 1, 100);
        assertEq(escrow.earnings(provider), PRICE * 1100 - fee1 - fee2);
        vm.startPrank(consumer);
        escrow.closeLease(leaseId);
        escrow.closeLease(id2);
        vm.stopPrank();
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(escrow.accruedFees(), fee1);
        escrow.finalizeLease(id2);
        assertEq(escrow.accruedFees(), fee1 + fee2);
    }

    function test_Settle_SameUsageNewSeq() public {
        _settle(leaseId, 1, 500);
        _settle(leaseId, 2, 500);
        assertEq(escrow.getLease(leaseId).lastSeq, 2);
        assertEq(escrow.getLease(leaseId).paid, PRICE * 500);
    }

    function test_Settle_UsageCappedAtEndsAt() public {
        vm.warp(block.timestamp + 10 days);
        // endsAt = startedAt + 3600; 2 gpus.
        _settle(leaseId, 1, 7200);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.paid, l.deposit);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 7201);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, leaseId, 7201, 7200)
        );
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleUsageExceedsElapsed() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 1201);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, leaseId, 1201, 1200)
        );
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleNotConsumer() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, leaseId, provider));
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleCheckpointLeaseMismatch() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId + 1, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_CheckpointLeaseMismatch.selector, leaseId, leaseId + 1)
        );
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleStaleSeq() public {
        _settle(leaseId, 2, 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 200);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_StaleSeq.selector, leaseId, 2, 2));
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleSeqZero() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 0, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_StaleSeq.selector, leaseId, 0, 0));
        escrow.settle(leaseId, cp, sig);
    }

    function test_Settle_MaxSeq() public {
        uint64 seq = type(uint40).max;
        _settle(leaseId, seq, 100);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.lastSeq, seq);
        assertEq(l.settledGpuSeconds, 100);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Open));
        assertEq(l.deposit, PRICE * 2 * 3600);
    }

    function test_RevertWhen_SettleSeqTooLarge() public {
        uint64 seq = uint64(type(uint40).max) + 1;
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, seq, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_StaleSeq.selector, leaseId, seq, 0));
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleUsageDecreased() public {
        _settle(leaseId, 1, 500);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 499);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageDecreased.selector, leaseId, 499, 500));
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleSignatureNotProvider() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(consumerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleLeaseFinalized() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseFinalized.selector, leaseId));
        escrow.settle(leaseId, cp, sig);
    }

    function test_Settle_AfterCloseWithinWindow_CappedAtClosedAt() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW - 1);
        _settle(leaseId, 1, 1200);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 2, 1201);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, leaseId, 1201, 1200)
        );
        escrow.settle(leaseId, cp, sig);
    }

    function test_RevertWhen_SettleAfterSettlementWindow() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        uint64 windowEnd = uint64(block.timestamp + SETTLEMENT_WINDOW);
        vm.warp(windowEnd);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_SettlementWindowClosed.selector, leaseId, windowEnd)
        );
        escrow.settle(leaseId, cp, sig);
    }

    function test_SettleWithConsent() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 1000);
        bytes memory pSig = _signCp(providerKey, cp);
        bytes memory cSig = _signCp(consumerKey, cp);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(
            leaseId, provider, consumer, 1, 1000, PRICE * 1000, PRICE * 1000 * FEE_BPS / 10_000
        );
        vm.prank(provider);
        escrow.settleWithConsent(leaseId, cp, pSig, cSig);
        assertEq(escrow.getLease(leaseId).lastSeq, 1);
    }

    function test_RevertWhen_SettleWithConsentNotProvider() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 1000);
        bytes memory pSig = _signCp(providerKey, cp);
        bytes memory cSig = _signCp(consumerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotProvider.selector, leaseId, consumer));
        escrow.settleWithConsent(leaseId, cp, pSig, cSig);
    }

    function test_RevertWhen_SettleWithConsentConsumerSigMissing() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(leaseId, 1, 1000);
        bytes memory pSig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, consumer));
        escrow.settleWithConsent(leaseId, cp, pSig, pSig);
    }

    function test_RevertWhen_SettleWithConsentLeaseNotFound() public {
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(99, 1, 1000);
        bytes memory pSig = _signCp(providerKey, cp);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotFound.selector, 99));
        escrow.settleWithConsent(99, cp, pSig, pSig);
    }

    function test_SettleBatch() public {
        uint256 id2 = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](2);
        items[0] = _item(leaseId, 1, 1000);
        items[1] = _item(id2, 1, 50);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(
            leaseId, provider, consumer, 1, 1000, PRICE * 1000, PRICE * 1000 * FEE_BPS / 10_000
        );
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(id2, provider, consumer, 1, 50, PRICE * 50, PRICE * 50 * FEE_BPS / 10_000);
        vm.prank(consumer);
        assertEq(escrow.settleBatch(items), 2);
        uint256 fees = PRICE * 1000 * FEE_BPS / 10_000 + PRICE * 50 * FEE_BPS / 10_000;
        assertEq(escrow.accruedFees(), 0);
        assertEq(escrow.earnings(provider), PRICE * 1050 - fees);
    }

    function test_SettleBatch_SkipsStaleSeq() public {
        _settle(leaseId, 2, 500);
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](2);
        items[0] = _item(leaseId, 2, 600);
        items[1] = _item(leaseId, 3, 700);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.SettlementSkipped(leaseId, consumer, 2, 2);
        vm.prank(consumer);
        assertEq(escrow.settleBatch(items), 1);
        assertEq(escrow.getLease(leaseId).settledGpuSeconds, 700);
    }

    function test_SettleBatch_SkipsFinalized() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](1);
        items[0] = _item(leaseId, 1, 10);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.SettlementSkipped(leaseId, consumer, 1, 0);
        vm.prank(consumer);
        assertEq(escrow.settleBatch(items), 0);
    }

    function test_RevertWhen_SettleBatchEmpty() public {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](0);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidBatchLength.selector, 0));
        escrow.settleBatch(items);
    }

    function test_RevertWhen_SettleBatchTooLong() public {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](257);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidBatchLength.selector, 257));
        escrow.settleBatch(items);
    }

    function test_RevertWhen_SettleBatchBadSignature() public {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](2);
        items[0] = _item(leaseId, 1, 100);
        items[1] = _item(leaseId, 2, 200);
        items[1].providerSig = _signCp(consumerKey, items[1].checkpoint);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.settleBatch(items);
    }

    function test_RevertWhen_SettleBatchNotConsumer() public {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](1);
        items[0] = _item(leaseId, 1, 100);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, leaseId, stranger));
        escrow.settleBatch(items);
    }

    function test_WithdrawEarnings() public {
        _settle(leaseId, 1, 1000);
        uint256 e = escrow.earnings(provider);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.EarningsWithdrawn(provider, e);
        vm.prank(provider);
        assertEq(escrow.withdrawEarnings(), e);
        assertEq(token.balanceOf(provider), e);
        assertEq(escrow.earnings(provider), 0);
    }

    function test_RevertWhen_WithdrawEarningsNothing() public {
        vm.prank(provider);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_NothingToWithdraw.selector);
        escrow.withdrawEarnings();
    }

    function _item(uint256 id, uint64 seq, uint64 cum) internal view returns (ILeaseEscrow.SettleItem memory it) {
        it.checkpoint = _cp(id, seq, cum);
        it.providerSig = _signCp(providerKey, it.checkpoint);
    }
}
