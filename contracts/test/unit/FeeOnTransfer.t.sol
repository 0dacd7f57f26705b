// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";
import {FeeOnTransferToken} from "../mocks/FeeOnTransferToken.sol";

/// @dev Tokens that deliver less than the amount sent are refused where tokens come in (open, top-up, stake), so
/// the escrow and the staking contract never credit money they did not receive.
contract FeeOnTransferTest is Base {
    uint256 internal leaseId;

    function _deployToken() internal override returns (DevToken) {
        return new FeeOnTransferToken();
    }

    /// @dev The provider stakes and one lease opens before the token's fee is switched on.
    function setUp() public override {
        super.setUp();
        leaseId = _open(1, 3600);
        FeeOnTransferToken(address(token)).setFeeOn(true);
    }

    function _afterFee(uint256 amount) internal pure returns (uint256) {
        return amount - amount * 100 / 10_000;
    }

    function test_RevertWhen_OpenWithFeeOnTransfer() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        uint256 deposit = PRICE * 3600;
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_AmountNotReceived.selector, deposit, _afterFee(deposit))
        );
        escrow.openLease(o, sig, 1, deposit);
    }

    function test_RevertWhen_TopUpWithFeeOnTransfer() public {
        uint256 amount = PRICE * 600;
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_AmountNotReceived.selector, amount, _afterFee(amount))
        );
        escrow.topUp(leaseId, amount);
    }

    function test_RevertWhen_StakeWithFeeOnTransfer() public {
        _fund(stranger, 10 ether);
        vm.startPrank(stranger);
        token.approve(address(staking), 10 ether);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderStaking.ProviderStaking_AmountNotReceived.selector, 10 ether, _afterFee(10 ether)
            )
        );
        staking.stake(10 ether);
        vm.stopPrank();
    }

    /// @dev What was deposited before the fee was switched on is still paid out in full (the escrow sends the
    /// amounts it owes; the token takes its fee from the receiver's side), and the escrow stays solvent.
    function test_FinalizeLease_AfterFeeSwitchedOn() public {
        vm.prank(consumer);
        escrow.closeLease(leaseId);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(leaseId);
        assertEq(token.balanceOf(address(escrow)), 0);
    }
}
