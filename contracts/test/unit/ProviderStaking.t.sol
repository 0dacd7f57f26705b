// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ProviderStaking} from "../../src/ProviderStaking.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";

contract ProviderStakingTest is Base {
    address internal p = makeAddr("p");

    function test_Stake() public {
        _fund(p, 10 ether);
        vm.startPrank(p);
        token.approve(address(staking), 10 ether);
        vm.expectEmit(address(staking));
        emit IProviderStaking.Staked(p, 10 ether, 10 ether);
        staking.stake(10 ether);
        vm.stopPrank();
        assertEq(staking.stakeOf(p), 10 ether);
        assertEq(staking.freeStake(p), 10 ether);
        assertEq(token.balanceOf(address(staking)), 100_000 ether + 10 ether);
    }

    function test_RevertWhen_StakeZero() public {
        vm.prank(p);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAmount.selector);
        staking.stake(0);
    }

    function test_Register() public {
        vm.expectEmit(address(staking));
        emit IProviderStaking.Registered(p, NODE_KEY, "uri");
        vm.prank(p);
        staking.register(NODE_KEY, "uri");
        assertEq(staking.nodeKey(p), NODE_KEY);
        assertFalse(staking.isRegistered(p)); // no stake
        _fundAndStake(p, MIN_STAKE);
        assertTrue(staking.isRegistered(p));
        vm.prank(p);
        staking.register(bytes32(uint256(2)), "uri2");
        assertEq(staking.nodeKey(p), bytes32(uint256(2)));
    }

    function test_RevertWhen_RegisterZeroKey() public {
        vm.prank(p);
        vm.expectRevert(IProviderStaking.ProviderStaking_InvalidNodeKey.selector);
        staking.register(bytes32(0), "");
    }

    function test_Unbond() public {
        _fundAndStake(p, 10 ether);
        uint64 readyAt = uint64(block.timestamp + UNBONDING);
        vm.expectEmit(address(staking));
        emit IProviderStaking.UnbondRequested(p, 4 ether, 4 ether, readyAt);
        vm.prank(p);
        staking.requestUnbond(4 ether);
        assertEq(staking.stakeOf(p), 6 ether);
        (uint256 amount, uint64 at) = staking.unbonding(p);
        assertEq(amount, 4 ether);
        assertEq(at, readyAt);
        vm.prank(p);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_UnbondingNotReady.selector, p, readyAt));
        staking.withdrawUnbonded();
        vm.warp(readyAt);
        vm.expectEmit(address(staking));
        emit IProviderStaking.Unbonded(p, 4 ether);
        vm.prank(p);
        assertEq(staking.withdrawUnbonded(), 4 ether);
        assertEq(token.balanceOf(p), 4 ether);
    }

    function test_RevertWhen_UnbondLockedStake() public {
        uint256 id = _open(1, 3600);
        id;
        uint256 free = staking.freeStake(provider);
        vm.prank(provider);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderStaking.ProviderStaking_InsufficientFreeStake.selector, provider, free + 1, free
            )
        );
        staking.requestUnbond(free + 1);
    }

    function test_RevertWhen_UnbondZero() public {
        vm.prank(p);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAmount.selector);
        staking.requestUnbond(0);
    }

    function test_RevertWhen_WithdrawNothingUnbonding() public {
        vm.prank(p);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NothingUnbonding.selector, p));
        staking.withdrawUnbonded();
    }

    function test_RevertWhen_NotEscrow() public {
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotEscrow.selector, stranger));
        staking.lockCollateral(provider, 1);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotEscrow.selector, stranger));
        staking.unlockCollateral(provider, 1);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotEscrow.selector, stranger));
        staking.slash(provider, 1, stranger, stranger);
        vm.stopPrank();
    }

    function test_RevertWhen_SetEscrowTwice() public {
        vm.expectRevert(
            abi.encodeWithSelector(IProviderStaking.ProviderStaking_EscrowAlreadySet.selector, address(escrow))
        );
        staking.setEscrow(stranger);
    }

    function test_RevertWhen_SetEscrowNotDeployer() public {
        ProviderStaking s = new ProviderStaking(IERC20(address(token)), treasury, 1, 1, 0, 0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotDeployer.selector, stranger));
        s.setEscrow(stranger);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAddress.selector);
        s.setEscrow(address(0));
        vm.expectEmit(address(s));
        emit IProviderStaking.EscrowSet(stranger);
        s.setEscrow(stranger);
        assertEq(s.escrow(), stranger);
    }

    function test_LockUnlockSlash_AsEscrow() public {
        vm.startPrank(address(escrow));
        vm.expectEmit(address(staking));
        emit IProviderStaking.CollateralLocked(provider, 100 ether, 100 ether);
        staking.lockCollateral(provider, 100 ether);
        vm.expectEmit(address(staking));
        emit IProviderStaking.CollateralUnlocked(provider, 40 ether, 60 ether);
        staking.unlockCollateral(provider, 40 ether);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderStaking.ProviderStaking_InsufficientLockedStake.selector, provider, 61 ether, 60 ether
            )
        );
        staking.unlockCollateral(provider, 61 ether);
        vm.expectEmit(address(staking));
        emit IProviderStaking.Slashed(provider, consumer, stranger, 10 ether, 5 ether, 2 ether, 3 ether);
        staking.slash(provider, 10 ether, consumer, stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderStaking.ProviderStaking_InsufficientLockedStake.selector, provider, 51 ether, 50 ether
            )
        );
        staking.slash(provider, 51 ether, consumer, stranger);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAmount.selector);
        staking.slash(provider, 0, consumer, stranger);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAddress.selector);
        staking.slash(provider, 1, address(0), stranger);
        vm.stopPrank();
        assertEq(staking.lockedStake(provider), 50 ether);
        assertEq(staking.stakeOf(provider), 100_000 ether - 10 ether);
        assertEq(token.balanceOf(consumer), 1_000_000 ether + 5 ether);
        assertEq(token.balanceOf(stranger), 2 ether);
        assertEq(token.balanceOf(stakingTreasury), 3 ether);
    }

    function test_RevertWhen_ConstructorInvalid() public {
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_InvalidSplit.selector, 6000, 5000));
        new ProviderStaking(IERC20(address(token)), treasury, 1, 1, 6000, 5000);
        vm.expectRevert(IProviderStaking.ProviderStaking_ZeroAddress.selector);
        new ProviderStaking(IERC20(address(0)), treasury, 1, 1, 0, 0);
    }

    function test_Views() public view {
        assertEq(staking.token(), address(token));
        assertEq(staking.treasury(), stakingTreasury);
        assertEq(staking.minStake(), MIN_STAKE);
        assertEq(staking.unbondingPeriod(), UNBONDING);
        assertEq(staking.wrongedBps(), WRONGED_BPS);
        assertEq(staking.finderBps(), FINDER_BPS);
    }
}
