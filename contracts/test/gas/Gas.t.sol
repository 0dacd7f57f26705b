// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {console} from "forge-std/console.sol";
import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

/// @notice Gas of the main paths. Each test makes its measured call first in the transaction, so storage is cold as
/// in a real transaction. `exec` is gasleft() around the call; the call from the test contract adds ~2.6k
/// (cold account access of the escrow) that a real transaction does not pay, so the logged receipt estimate is
/// 21_000 + calldata + exec - 2_600.
contract GasTest is Base {
    ILeaseEscrow.Offer internal offer;
    bytes internal offerSig;
    uint256 internal warmLease; // a lease with one settlement, so earnings and fees are non-zero
    uint256 internal freshLease;
    uint256[] internal batchLeases;
    ILeaseEscrow.UsageCheckpoint internal cp;
    bytes internal cpSig;

    function setUp() public override {
        super.setUp();
        offer = _offer();
        offer.gpuCount = 100;
        offer.expiresAt = uint64(block.timestamp + 10 days);
        offerSig = _signOffer(offer);
        vm.startPrank(consumer);
        warmLease = escrow.openLease(offer, offerSig, 1, PRICE * 3600);
        freshLease = escrow.openLease(offer, offerSig, 1, PRICE * 3600);
        for (uint256 i; i < 50; ++i) {
            batchLeases.push(escrow.openLease(offer, offerSig, 1, PRICE * 3600));
        }
        vm.stopPrank();
        vm.warp(block.timestamp + 600);
        _settle(warmLease, 1, 100);
        cp = _cp(freshLease, 1, 500);
        cpSig = _signCp(providerKey, cp);
    }

    function _calldataGas(bytes memory data) internal pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }

    function _report(string memory what, uint256 exec, bytes memory data) internal pure {
        uint256 cd = _calldataGas(data);
        console.log(what);
        console.log("  exec", exec, "calldata", cd);
        console.log("  receipt estimate", 21_000 + cd + exec - 2_600);
    }

    function test_Gas_OpenLease() public {
        ILeaseEscrow.Offer memory o = offer;
        bytes memory s = offerSig;
        bytes memory data = abi.encodeCall(escrow.openLease, (o, s, 1, PRICE * 3600));
        vm.prank(consumer);
        uint256 g = gasleft();
        escrow.openLease(o, s, 1, PRICE * 3600);
        _report("openLease (offer already used once)", g - gasleft(), data);
    }

    function test_Gas_OpenLease_FreshOffer() public {
        ILeaseEscrow.Offer memory o = offer;
        o.nonce = 99;
        bytes memory s = _signOffer(o);
        bytes memory data = abi.encodeCall(escrow.openLease, (o, s, 1, PRICE * 3600));
        vm.prank(consumer);
        uint256 g = gasleft();
        escrow.openLease(o, s, 1, PRICE * 3600);
        _report("openLease (first lease of an offer)", g - gasleft(), data);
    }

    function test_Gas_Settle() public {
        ILeaseEscrow.UsageCheckpoint memory c = cp;
        bytes memory s = cpSig;
        bytes memory data = abi.encodeCall(escrow.settle, (freshLease, c, s));
        vm.prank(consumer);
        uint256 g = gasleft();
        escrow.settle(freshLease, c, s);
        _report("settle", g - gasleft(), data);
    }

    function test_Gas_SettleWithConsent() public {
        ILeaseEscrow.UsageCheckpoint memory c = cp;
        bytes memory s = cpSig;
        bytes memory cs = _signCp(consumerKey, c);
        bytes memory data = abi.encodeCall(escrow.settleWithConsent, (freshLease, c, s, cs));
        vm.prank(provider);
        uint256 g = gasleft();
        escrow.settleWithConsent(freshLease, c, s, cs);
        _report("settleWithConsent", g - gasleft(), data);
    }

    function _batch(uint256 n) internal returns (uint256 exec) {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](n);
        for (uint256 i; i < n; ++i) {
            items[i].checkpoint = _cp(batchLeases[i], 1, 300);
            items[i].providerSig = _signCp(providerKey, items[i].checkpoint);
        }
        bytes memory data = abi.encodeCall(escrow.settleBatch, (items));
        vm.prank(consumer);
        uint256 g = gasleft();
        escrow.settleBatch(items);
        exec = g - gasleft();
        _report(string.concat("settleBatch x", vm.toString(n)), exec, data);
    }

    function test_Gas_SettleBatch1() public {
        _batch(1);
    }

    function test_Gas_SettleBatch10() public {
        _batch(10);
    }

    function test_Gas_SettleBatch50() public {
        _batch(50);
    }

    function test_Gas_CloseAndFinalize() public {
        vm.prank(consumer);
        uint256 g = gasleft();
        escrow.closeLease(freshLease);
        _report("closeLease", g - gasleft(), abi.encodeCall(escrow.closeLease, (freshLease)));
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        // Fresh transaction semantics are not available mid-test; finalize is measured warm here.
        g = gasleft();
        escrow.finalizeLease(freshLease);
        _report("finalizeLease (warm lease slots)", g - gasleft(), abi.encodeCall(escrow.finalizeLease, (freshLease)));
    }

    function test_Gas_Finalize() public {
        vm.prank(consumer);
        escrow.closeLease(warmLease);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        uint256 g = gasleft();
        escrow.finalizeLease(freshLease == 0 ? 0 : warmLease);
        _report(
            "finalizeLease (lease warm from close in same test)",
            g - gasleft(),
            abi.encodeCall(escrow.finalizeLease, (warmLease))
        );
    }

    function test_Gas_WithdrawEarnings() public {
        vm.prank(provider);
        uint256 g = gasleft();
        escrow.withdrawEarnings();
        _report("withdrawEarnings", g - gasleft(), abi.encodeCall(escrow.withdrawEarnings, ()));
    }
}
