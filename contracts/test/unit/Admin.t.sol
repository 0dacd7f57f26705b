// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {DevToken} from "../../src/DevToken.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";

contract AdminTest is Base {
    function test_Views() public view {
        assertEq(escrow.MAX_FEE_BPS(), 1_000);
        assertEq(escrow.MAX_BATCH_SIZE(), 256);
        assertEq(escrow.feeBps(), FEE_BPS);
        assertEq(escrow.treasury(), treasury);
        assertEq(escrow.token(), address(token));
        assertEq(address(escrow.staking()), address(staking));
        assertEq(escrow.collateralBps(), COLLATERAL_BPS);
        assertEq(escrow.livenessSlashBps(), LIVENESS_SLASH_BPS);
        assertEq(escrow.settlementWindow(), SETTLEMENT_WINDOW);
        assertEq(escrow.disputeWindow(), DISPUTE_WINDOW);
        assertEq(escrow.livenessWindow(), LIVENESS_WINDOW);
        assertEq(escrow.minNonce(provider), 0);
        assertEq(uint8(escrow.getLease(1).status), uint8(ILeaseEscrow.LeaseStatus.None));
    }

    function test_SetFee() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.FeeUpdated(FEE_BPS, 1_000);
        vm.prank(owner);
        escrow.setFee(1_000);
        assertEq(escrow.feeBps(), 1_000);
    }

    function test_RevertWhen_SetFeeTooHigh() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_FeeTooHigh.selector, 1_001));
        escrow.setFee(1_001);
    }

    function test_RevertWhen_SetFeeNotOwner() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        escrow.setFee(1);
    }

    function test_SetTreasury() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.TreasuryUpdated(treasury, stranger);
        vm.prank(owner);
        escrow.setTreasury(stranger);
        assertEq(escrow.treasury(), stranger);
    }

    function test_RevertWhen_SetTreasuryZero() public {
        vm.prank(owner);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_ZeroAddress.selector);
        escrow.setTreasury(address(0));
    }

    function test_WithdrawFees() public {
        uint256 id = _open(1, 3600);
        vm.warp(block.timestamp + 1000);
        _settle(id, 1, 1000);
        assertEq(escrow.accruedFees(), 0);
        vm.prank(consumer);
        escrow.closeLease(id);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(id);
        uint256 fees = escrow.accruedFees();
        assertEq(fees, PRICE * 1000 * FEE_BPS / 10_000);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.FeesWithdrawn(stranger, fees);
        vm.prank(treasury);
        assertEq(escrow.withdrawFees(stranger), fees);
        assertEq(token.balanceOf(stranger), fees);
        assertEq(escrow.accruedFees(), 0);
    }

    function test_RevertWhen_WithdrawFeesNotTreasury() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotTreasury.selector, owner));
        escrow.withdrawFees(owner);
    }

    function test_RevertWhen_WithdrawFeesNothing() public {
        vm.prank(treasury);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_NothingToWithdraw.selector);
        escrow.withdrawFees(treasury);
    }

    function test_RevertWhen_WithdrawFeesToZero() public {
        vm.prank(treasury);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_ZeroAddress.selector);
        escrow.withdrawFees(address(0));
    }

    function test_RevertWhen_ConstructorInvalid() public {
        ILeaseEscrow.Config memory c = _config();
        c.feeBps = 1_001;
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_FeeTooHigh.selector, 1_001));
        new LeaseEscrow(IERC20(address(token)), IProviderStaking(address(staking)), owner, c);
        c = _config();
        c.collateralBps = 10_001;
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_InvalidConfig.selector);
        new LeaseEscrow(IERC20(address(token)), IProviderStaking(address(staking)), owner, c);
        c = _config();
        c.treasury = address(0);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_ZeroAddress.selector);
        new LeaseEscrow(IERC20(address(token)), IProviderStaking(address(staking)), owner, c);
    }

    function test_DevToken() public {
        DevToken t = new DevToken();
        assertEq(t.name(), "gpunet Dev Token");
        assertEq(t.symbol(), "gDEV");
        assertEq(t.decimals(), 18);
        vm.prank(stranger);
        t.mint(stranger, 5 ether);
        assertEq(t.balanceOf(stranger), 5 ether);
        uint256 cap = t.MAX_MINT_PER_CALL();
        vm.expectRevert(abi.encodeWithSelector(DevToken.DevToken_MintCapExceeded.selector, cap + 1, cap));
        t.mint(stranger, cap + 1);
    }
}
