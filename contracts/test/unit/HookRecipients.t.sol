// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {HookToken, GasBurningReceiver} from "../mocks/HookToken.sol";

/// @dev With a token that calls a receive hook, a consumer contract whose hook burns all the gas it gets cannot
/// block finalization nor make it cost more than the bounded push.
contract HookRecipientsTest is Base {
    function _deployToken() internal override returns (DevToken) {
        return new HookToken();
    }

    function test_FinalizeLease_WhenRecipientHookBurnsGas() public {
        address burner = address(new GasBurningReceiver());
        _fund(burner, 10 ether);
        vm.prank(burner);
        token.approve(address(escrow), type(uint256).max);
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.prank(burner);
        uint256 leaseId = escrow.openLease(o, sig, 1, PRICE * 3600);
        vm.prank(burner);
        escrow.closeLease(leaseId);
        HookToken(address(token)).setHooked(burner, true);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        // A million gas is plenty: the hook gets at most the push's cap.
        escrow.finalizeLease{gas: 1_000_000}(leaseId);
        assertEq(uint8(escrow.getLease(leaseId).status), uint8(ILeaseEscrow.LeaseStatus.Finalized));
        assertEq(escrow.refunds(burner), PRICE * 3600);
    }
}
