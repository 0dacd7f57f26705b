// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Vm} from "forge-std/Vm.sol";
import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

contract SettlementFuzzTest is Base {
    /// @dev Amount, fee and caps for any valid (gpus, duration, elapsed, usage).
    function testFuzz_Settle(uint32 gpus, uint256 duration, uint256 elapsed, uint256 usage, uint16 feeBps) public {
        gpus = uint32(bound(gpus, 1, 8));
        duration = bound(duration, 60, 30 days);
        elapsed = bound(elapsed, 0, 60 days);
        feeBps = uint16(bound(feeBps, 0, 1_000));
        vm.prank(owner);
        escrow.setFee(feeBps);
        uint256 id = _open(gpus, duration);
        vm.warp(block.timestamp + elapsed);
        uint256 billable = elapsed < duration ? elapsed : duration;
        uint256 maxUsage = uint256(gpus) * billable;
        usage = bound(usage, 0, maxUsage);
        _settle(id, 1, uint64(usage));
        uint256 amount = PRICE * usage;
        uint256 fee = amount * feeBps / 10_000;
        ILeaseEscrow.Lease memory l = escrow.getLease(id);
        assertEq(l.paid, amount);
        assertLe(l.paid, l.deposit);
        assertEq(escrow.accruedFees(), 0);
        assertEq(escrow.earnings(provider), amount - fee);
        vm.prank(consumer);
        escrow.closeLease(id);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(id);
        assertEq(escrow.accruedFees(), fee);
        assertEq(token.balanceOf(address(escrow)), amount);
    }

    /// @dev For any price, fee rate and split of usage into settlements, the emitted fees sum to
    /// feeCum(final) = floor(final * price * feeBps / 10_000), each fee is at most its amount, the provider gets the
    /// rest, and the fees become withdrawable at finalization.
    function testFuzz_FeeSplitInvariant(uint64 price, uint16 feeBps, uint256[4] memory steps) public {
        price = uint64(bound(price, 1, 1e15));
        feeBps = uint16(bound(feeBps, 0, 1_000));
        vm.prank(owner);
        escrow.setFee(feeBps);
        ILeaseEscrow.Offer memory o = _offer();
        o.pricePerGpuSecond = price;
        bytes memory oSig = _signOffer(o);
        vm.prank(consumer);
        uint256 id = escrow.openLease(o, oSig, 3, uint256(price) * 3 * 3600);
        // Later rate changes do not affect the open lease.
        vm.prank(owner);
        escrow.setFee(uint16(1_000 - feeBps));
        vm.warp(block.timestamp + 3600);
        uint64 cum;
        uint256 feeSum;
        vm.recordLogs();
        for (uint256 i; i < 4; ++i) {
            cum = uint64(bound(steps[i], cum, 3 * 3600));
            _settle(id, uint64(i + 1), cum);
        }
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != ILeaseEscrow.LeaseSettled.selector) continue;
            (,, uint256 amount, uint256 fee) = abi.decode(logs[i].data, (uint64, uint64, uint256, uint256));
            assertLe(fee, amount);
            feeSum += fee;
        }
        uint256 expected = uint256(cum) * price * feeBps / 10_000;
        assertEq(feeSum, expected);
        assertEq(escrow.earnings(provider), uint256(price) * cum - expected);
        assertEq(escrow.accruedFees(), 0);
        vm.prank(consumer);
        escrow.closeLease(id);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(id);
        assertEq(escrow.accruedFees(), expected);
        assertEq(token.balanceOf(address(escrow)), escrow.earnings(provider) + expected);
    }

    /// @dev Usage above gpus * elapsed paid-through time is always rejected.
    function testFuzz_RevertWhen_UsageAboveElapsed(uint32 gpus, uint256 duration, uint256 elapsed, uint256 extra)
        public
    {
        gpus = uint32(bound(gpus, 1, 8));
        duration = bound(duration, 60, 30 days);
        elapsed = bound(elapsed, 0, 60 days);
        uint256 id = _open(gpus, duration);
        vm.warp(block.timestamp + elapsed);
        uint256 billable = elapsed < duration ? elapsed : duration;
        uint256 maxUsage = uint256(gpus) * billable;
        uint64 usage = uint64(maxUsage + bound(extra, 1, 1e9));
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(id, 1, usage);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_UsageExceedsElapsed.selector, id, usage, maxUsage)
        );
        escrow.settle(id, cp, sig);
    }

    /// @dev A sequence of settlements pays exactly price * final usage in total, never more than the deposit.
    function testFuzz_SettleSequence(uint256[5] memory steps) public {
        uint256 id = _open(4, 7200);
        uint64 cum;
        for (uint256 i; i < 5; ++i) {
            vm.warp(block.timestamp + bound(steps[i], 0, 2000));
            ILeaseEscrow.Lease memory l = escrow.getLease(id);
            uint256 t = block.timestamp < l.endsAt ? block.timestamp : l.endsAt;
            uint256 max = 4 * (t - l.startedAt);
            cum = uint64(bound(uint256(keccak256(abi.encode(steps[i]))), cum, max));
            _settle(id, uint64(i + 1), cum);
        }
        ILeaseEscrow.Lease memory f = escrow.getLease(id);
        assertEq(f.paid, PRICE * cum);
        assertLe(f.paid, f.deposit);
        assertEq(escrow.earnings(provider), PRICE * cum - PRICE * cum * FEE_BPS / 10_000);
        assertEq(escrow.accruedFees(), 0);
    }

    /// @dev Top-ups move endsAt by deposit / rate, capped by maxDuration.
    function testFuzz_TopUp(uint256 duration, uint256 extra) public {
        duration = bound(duration, 60, 30 days);
        extra = bound(extra, 1, 30 days - duration + 1);
        uint256 id = _open(2, duration);
        uint256 amount = PRICE * 2 * extra;
        ILeaseEscrow.Lease memory l = escrow.getLease(id);
        if (duration + extra > 30 days) {
            vm.prank(consumer);
            vm.expectRevert();
            escrow.topUp(id, amount);
            return;
        }
        vm.prank(consumer);
        escrow.topUp(id, amount);
        ILeaseEscrow.Lease memory n = escrow.getLease(id);
        assertEq(n.endsAt, l.startedAt + duration + extra);
        assertEq(n.collateral, n.deposit * COLLATERAL_BPS / 10_000);
        assertEq(staking.lockedStake(provider), n.collateral);
    }

    /// @dev Settlement is accepted strictly before closedAt + settlementWindow, finalization from then on.
    function testFuzz_SettlementWindow(uint256 wait) public {
        wait = bound(wait, 0, 3 * SETTLEMENT_WINDOW);
        uint256 id = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        vm.prank(consumer);
        escrow.closeLease(id);
        uint256 closedAt = block.timestamp;
        vm.warp(block.timestamp + wait);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(id, 1, 100);
        bytes memory sig = _signCp(providerKey, cp);
        if (block.timestamp < closedAt + SETTLEMENT_WINDOW) {
            vm.prank(consumer);
            escrow.settle(id, cp, sig);
            vm.expectRevert();
            escrow.finalizeLease(id);
        } else {
            vm.prank(consumer);
            vm.expectRevert();
            escrow.settle(id, cp, sig);
            escrow.finalizeLease(id);
        }
    }

    /// @dev Claims finalize only from readyAt and disputes only before it.
    function testFuzz_DisputeWindow(uint256 wait) public {
        wait = bound(wait, 0, 2 * DISPUTE_WINDOW);
        uint256 id = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(id, 2, 100);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(provider);
        escrow.claim(id, cp, sig);
        uint256 readyAt = block.timestamp + DISPUTE_WINDOW;
        vm.warp(block.timestamp + wait);
        ILeaseEscrow.UsageCheckpoint memory ev = _cp(id, 3, 50);
        bytes memory evSig = _signCp(providerKey, ev);
        if (block.timestamp < readyAt) {
            vm.expectRevert();
            escrow.finalizeClaim(id);
            vm.prank(consumer);
            escrow.dispute(id, ev, evSig);
        } else {
            vm.prank(consumer);
            vm.expectRevert();
            escrow.dispute(id, ev, evSig);
            escrow.finalizeClaim(id);
            assertEq(escrow.getLease(id).settledGpuSeconds, 100);
        }
    }
}
