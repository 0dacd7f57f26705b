// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Vm} from "forge-std/Vm.sol";
import {console} from "forge-std/console.sol";
import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

/// @notice Gas of the main paths, as receipt-equivalent numbers.
/// Every measured call runs on cold state, like the first call of a transaction: `_cool` marks the accounts and
/// storage of the escrow, the staking contract and the token cold before it. `exec` is the gas used by the escrow's
/// call frame (`vm.lastCallGas`, nested calls included, the caller's cold account access excluded, as in a
/// transaction whose `to` is the escrow); the receipt estimate is 21_000 + calldata gas (EIP-2028) + exec - refund
/// (refunds capped at a fifth of the gas used).
contract GasTest is Base {
    ILeaseEscrow.Offer internal offer;
    bytes internal offerSig;
    uint256 internal settledLease; // one settlement already, so earnings and the lease's fees are non-zero
    uint256 internal freshLease; // never settled
    uint256[] internal batchLeases;

    function setUp() public override {
        super.setUp();
        offer = _offer();
        offer.gpuCount = 100;
        offer.expiresAt = uint64(block.timestamp + 10 days);
        offerSig = _signOffer(offer);
        vm.startPrank(consumer);
        settledLease = escrow.openLease(offer, offerSig, 1, PRICE * 3600);
        freshLease = escrow.openLease(offer, offerSig, 1, PRICE * 3600);
        for (uint256 i; i < 50; ++i) {
            batchLeases.push(escrow.openLease(offer, offerSig, 1, PRICE * 3600));
        }
        vm.stopPrank();
        vm.warp(block.timestamp + 600);
        _settle(settledLease, 1, 100);
    }

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    function _cool() internal {
        vm.cool(address(escrow));
        vm.cool(address(staking));
        vm.cool(address(token));
    }

    function _calldataGas(bytes memory data) internal pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }

    /// @dev Logs and returns the receipt estimate of the last call, whose calldata was `data`.
    function _report(string memory what, bytes memory data) internal view returns (uint256 receipt) {
        Vm.Gas memory gas = vm.lastCallGas();
        uint256 exec = gas.gasTotalUsed;
        uint256 refund = gas.gasRefunded > 0 ? uint256(uint64(gas.gasRefunded)) : 0;
        uint256 cd = _calldataGas(data);
        uint256 used = 21_000 + cd + exec;
        if (refund > used / 5) refund = used / 5;
        receipt = used - refund;
        console.log(what);
        console.log("  exec", exec, "calldata", cd);
        console.log("  refund", refund, "receipt estimate", receipt);
    }

    function _openMeasured(string memory what, ILeaseEscrow.Offer memory o, bytes memory s)
        internal
        returns (uint256 leaseId, uint256 receipt)
    {
        _cool();
        vm.prank(consumer);
        leaseId = escrow.openLease(o, s, 1, PRICE * 3600);
        receipt = _report(what, abi.encodeCall(escrow.openLease, (o, s, 1, PRICE * 3600)));
    }

    function _settleMeasured(string memory what, uint256 leaseId, uint64 seq, uint64 cumulative)
        internal
        returns (uint256 receipt)
    {
        ILeaseEscrow.UsageCheckpoint memory c = _cp(leaseId, seq, cumulative);
        bytes memory s = _signCp(providerKey, c);
        _cool();
        vm.prank(consumer);
        escrow.settle(leaseId, c, s);
        receipt = _report(what, abi.encodeCall(escrow.settle, (leaseId, c, s)));
    }

    function _closeMeasured(string memory what, uint256 leaseId) internal returns (uint256 receipt) {
        _cool();
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        receipt = _report(what, abi.encodeCall(escrow.closeLease, (leaseId)));
    }

    function _batch(uint256 n) internal returns (uint256 receipt) {
        ILeaseEscrow.SettleItem[] memory items = new ILeaseEscrow.SettleItem[](n);
        for (uint256 i; i < n; ++i) {
            items[i].checkpoint = _cp(batchLeases[i], 1, 300);
            items[i].providerSig = _signCp(providerKey, items[i].checkpoint);
        }
        _cool();
        vm.prank(consumer);
        escrow.settleBatch(items);
        receipt = _report(string.concat("settleBatch x", vm.toString(n)), abi.encodeCall(escrow.settleBatch, (items)));
    }

    /*//////////////////////////////////////////////////////////////
                                OPEN
    //////////////////////////////////////////////////////////////*/

    function test_Gas_OpenLease() public {
        _openMeasured("openLease (offer already used)", offer, offerSig);
    }

    function test_Gas_OpenLease_FreshOffer() public {
        ILeaseEscrow.Offer memory o = offer;
        o.nonce = 99;
        _openMeasured("openLease (first lease of an offer)", o, _signOffer(o));
    }

    /*//////////////////////////////////////////////////////////////
                                SETTLE
    //////////////////////////////////////////////////////////////*/

    function test_Gas_Settle() public {
        _settleMeasured("settle (first settlement of a lease)", freshLease, 1, 500);
    }

    function test_Gas_Settle_Later() public {
        _settleMeasured("settle (later settlement of a lease)", settledLease, 2, 500);
    }

    /// @dev The provider withdrew everything before: its earnings slot keeps a non-zero marker.
    function test_Gas_Settle_AfterWithdraw() public {
        vm.prank(provider);
        escrow.withdrawEarnings();
        _settleMeasured("settle (provider earnings withdrawn before)", freshLease, 1, 500);
    }

    function test_Gas_SettleWithConsent() public {
        ILeaseEscrow.UsageCheckpoint memory c = _cp(freshLease, 1, 500);
        bytes memory s = _signCp(providerKey, c);
        bytes memory cs = _signCp(consumerKey, c);
        _cool();
        vm.prank(provider);
        escrow.settleWithConsent(freshLease, c, s, cs);
        _report("settleWithConsent", abi.encodeCall(escrow.settleWithConsent, (freshLease, c, s, cs)));
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

    /// @dev Marginal receipt gas per extra lease: (x50 - x1) / 49 and (x10 - x1) / 9.
    function test_Gas_SettleBatchMarginal() public {
        uint256 snap = vm.snapshotState();
        uint256 one = _batch(1);
        vm.revertToState(snap);
        uint256 ten = _batch(10);
        vm.revertToState(snap);
        uint256 fifty = _batch(50);
        console.log("settleBatch marginal per extra lease, 10:", (ten - one) / 9, "50:", (fifty - one) / 49);
    }

    /*//////////////////////////////////////////////////////////////
                            CLOSE, FINALIZE
    //////////////////////////////////////////////////////////////*/

    function test_Gas_CloseLease() public {
        _closeMeasured("closeLease", freshLease);
    }

    function test_Gas_FinalizeLease() public {
        vm.prank(consumer);
        escrow.closeLease(settledLease);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        _cool();
        escrow.finalizeLease(settledLease);
        _report(
            "finalizeLease (settled lease, refund and unlock)", abi.encodeCall(escrow.finalizeLease, (settledLease))
        );
    }

    /// @dev The lifecycle of a new lease on a used offer: open, one settlement, close; each a transaction.
    function test_Gas_OpenSettleClose() public {
        (uint256 id, uint256 open) = _openMeasured("lifecycle: openLease", offer, offerSig);
        vm.warp(block.timestamp + 600);
        uint256 settle = _settleMeasured("lifecycle: settle", id, 1, 600);
        uint256 close = _closeMeasured("lifecycle: closeLease", id);
        console.log("open + settle + close", open + settle + close);
    }

    function test_Gas_WithdrawEarnings() public {
        _cool();
        vm.prank(provider);
        escrow.withdrawEarnings();
        _report("withdrawEarnings", abi.encodeCall(escrow.withdrawEarnings, ()));
    }
    /*//////////////////////////////////////////////////////////////
                        TOP-UP AND FAULT PATHS
    //////////////////////////////////////////////////////////////*/

    function test_Gas_TopUp() public {
        _cool();
        vm.prank(consumer);
        escrow.topUp(freshLease, PRICE * 600);
        _report("topUp", abi.encodeCall(escrow.topUp, (freshLease, PRICE * 600)));
    }

    function test_Gas_Claim() public {
        ILeaseEscrow.UsageCheckpoint memory c = _cp(freshLease, 1, 500);
        bytes memory s = _signCp(providerKey, c);
        _cool();
        vm.prank(provider);
        escrow.claim(freshLease, c, s);
        _report("claim", abi.encodeCall(escrow.claim, (freshLease, c, s)));
    }

    function test_Gas_Dispute() public {
        ILeaseEscrow.UsageCheckpoint memory c = _cp(freshLease, 1, 500);
        bytes memory cs = _signCp(providerKey, c);
        vm.prank(provider);
        escrow.claim(freshLease, c, cs);
        ILeaseEscrow.UsageCheckpoint memory e = _cp(freshLease, 2, 400);
        bytes memory s = _signCp(providerKey, e);
        _cool();
        vm.prank(consumer);
        escrow.dispute(freshLease, e, s);
        _report("dispute", abi.encodeCall(escrow.dispute, (freshLease, e, s)));
    }

    function test_Gas_FinalizeClaim() public {
        ILeaseEscrow.UsageCheckpoint memory c = _cp(freshLease, 1, 500);
        bytes memory cs = _signCp(providerKey, c);
        vm.prank(provider);
        escrow.claim(freshLease, c, cs);
        vm.warp(block.timestamp + DISPUTE_WINDOW);
        _cool();
        escrow.finalizeClaim(freshLease);
        _report("finalizeClaim", abi.encodeCall(escrow.finalizeClaim, (freshLease)));
    }

    function test_Gas_ChallengeLiveness() public {
        _cool();
        vm.prank(consumer);
        escrow.challengeLiveness(freshLease);
        _report("challengeLiveness", abi.encodeCall(escrow.challengeLiveness, (freshLease)));
    }

    function test_Gas_AnswerLiveness() public {
        vm.prank(consumer);
        escrow.challengeLiveness(freshLease);
        _cool();
        vm.prank(provider);
        escrow.answerLiveness(freshLease);
        _report("answerLiveness", abi.encodeCall(escrow.answerLiveness, (freshLease)));
    }

    function test_Gas_ResolveLiveness() public {
        vm.prank(consumer);
        escrow.challengeLiveness(freshLease);
        vm.warp(block.timestamp + LIVENESS_WINDOW);
        _cool();
        vm.prank(consumer);
        escrow.resolveLiveness(freshLease);
        _report("resolveLiveness (slash and close)", abi.encodeCall(escrow.resolveLiveness, (freshLease)));
    }

    function test_Gas_ReportEquivocation() public {
        ILeaseEscrow.UsageCheckpoint memory a = _cp(freshLease, 1, 100);
        ILeaseEscrow.UsageCheckpoint memory b = _cp(freshLease, 1, 200);
        bytes memory sa = _signCp(providerKey, a);
        bytes memory sb = _signCp(providerKey, b);
        _cool();
        vm.prank(stranger);
        escrow.reportEquivocation(freshLease, a, sa, b, sb);
        _report(
            "reportEquivocation (slash all and close)",
            abi.encodeCall(escrow.reportEquivocation, (freshLease, a, sa, b, sb))
        );
    }
}
