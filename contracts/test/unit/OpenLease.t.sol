// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../../src/interfaces/IProviderStaking.sol";

contract OpenLeaseTest is Base {
    function test_OpenLease() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        bytes32 offerHash = escrow.hashOffer(o);
        uint256 deposit = PRICE * 2 * 3600;
        uint256 balBefore = token.balanceOf(consumer);

        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseOpened(
            1, provider, consumer, offerHash, 2, PRICE, deposit, uint64(block.timestamp), uint64(block.timestamp + 3600)
        );
        vm.prank(consumer);
        uint256 leaseId = escrow.openLease(o, sig, 2, deposit);

        assertEq(leaseId, 1);
        assertEq(escrow.leaseCount(), 1);
        ILeaseEscrow.Lease memory l = escrow.getLease(leaseId);
        assertEq(l.consumer, consumer);
        assertEq(l.provider, provider);
        assertEq(l.offerHash, offerHash);
        assertEq(l.gpus, 2);
        assertEq(uint8(l.status), uint8(ILeaseEscrow.LeaseStatus.Open));
        assertEq(l.pricePerGpuSecond, PRICE);
        assertEq(l.deposit, deposit);
        assertEq(l.paid, 0);
        assertEq(l.startedAt, block.timestamp);
        assertEq(l.endsAt, block.timestamp + 3600);
        assertEq(l.maxEndsAt, block.timestamp + 30 days);
        assertEq(l.collateral, deposit * COLLATERAL_BPS / 10_000);
        assertEq(escrow.offerGpusInUse(offerHash), 2);
        assertEq(staking.lockedStake(provider), deposit * COLLATERAL_BPS / 10_000);
        assertEq(token.balanceOf(address(escrow)), deposit);
        assertEq(token.balanceOf(consumer), balBefore - deposit);
    }

    function test_OpenLease_SequentialIds() public {
        assertEq(_open(1, 100), 1);
        assertEq(_open(1, 100), 2);
        assertEq(_open(1, 100), 3);
    }

    function test_OpenLease_EndsAtCappedByMaxDuration() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.maxDuration = 1000;
        bytes memory sig = _signOffer(o);
        vm.prank(consumer);
        uint256 id = escrow.openLease(o, sig, 1, PRICE * 1000);
        assertEq(escrow.getLease(id).endsAt, block.timestamp + 1000);
    }

    function test_OpenLeaseWithPermit() public {
        uint256 userKey = 0xC0FFEE;
        address user = vm.addr(userKey);
        _fund(user, 100 ether);
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        uint256 deposit = PRICE * 3600;
        (uint8 v, bytes32 r, bytes32 s) = _permit(userKey, user, deposit, block.timestamp + 1);
        vm.prank(user);
        uint256 id = escrow.openLeaseWithPermit(o, sig, 1, deposit, block.timestamp + 1, v, r, s);
        assertEq(escrow.getLease(id).consumer, user);
        assertEq(token.balanceOf(address(escrow)), deposit);
    }

    function test_OpenLeaseWithPermit_FrontRunPermitTolerated() public {
        uint256 userKey = 0xC0FFEE;
        address user = vm.addr(userKey);
        _fund(user, 100 ether);
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        uint256 deposit = PRICE * 3600;
        (uint8 v, bytes32 r, bytes32 s) = _permit(userKey, user, deposit, block.timestamp + 1);
        // Someone submits the permit first.
        token.permit(user, address(escrow), deposit, block.timestamp + 1, v, r, s);
        vm.prank(user);
        uint256 id = escrow.openLeaseWithPermit(o, sig, 1, deposit, block.timestamp + 1, v, r, s);
        assertEq(escrow.getLease(id).consumer, user);
    }

    function test_RevertWhen_PermitInvalidAndNoAllowance() public {
        address user = makeAddr("user");
        _fund(user, 100 ether);
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.prank(user);
        vm.expectRevert();
        escrow.openLeaseWithPermit(o, sig, 1, PRICE * 3600, block.timestamp + 1, 27, bytes32(0), bytes32(0));
    }

    function _permit(uint256 key, address holder, uint256 value, uint256 deadline)
        internal
        view
        returns (uint8, bytes32, bytes32)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                holder,
                address(escrow),
                value,
                token.nonces(holder),
                deadline
            )
        );
        return vm.sign(key, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
    }

    function test_RevertWhen_OfferExpired() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.warp(o.expiresAt);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_OfferExpired.selector, o.expiresAt));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_OfferCancelled() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.prank(provider);
        escrow.cancelOffersBelow(2);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_OfferCancelled.selector, provider, 1, 2));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_OfferTermsInvalid() public {
        ILeaseEscrow.Offer[4] memory bad;
        for (uint256 i; i < 4; ++i) {
            bad[i] = _offer();
        }
        bad[0].pricePerGpuSecond = 0;
        bad[1].pricePerGpuSecond = uint256(type(uint64).max) + 1;
        bad[2].minDuration = 0;
        bad[3].minDuration = bad[3].maxDuration + 1;
        for (uint256 i; i < 4; ++i) {
            bytes memory sig = _signOffer(bad[i]);
            vm.prank(consumer);
            vm.expectRevert(ILeaseEscrow.LeaseEscrow_InvalidOfferTerms.selector);
            escrow.openLease(bad[i], sig, 1, PRICE * 3600);
        }
    }

    function test_RevertWhen_ZeroGpus() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.prank(consumer);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_ZeroGpus.selector);
        escrow.openLease(o, sig, 0, PRICE * 3600);
    }

    function test_RevertWhen_OfferSignatureWrong() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _sign(consumerKey, _digest(escrow, escrow.hashOffer(o)));
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_OfferFieldTampered() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        o.pricePerGpuSecond = PRICE / 2;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_InsufficientCapacity() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        bytes32 h = escrow.hashOffer(o);
        vm.startPrank(consumer);
        escrow.openLease(o, sig, 6, PRICE * 6 * 3600);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InsufficientCapacity.selector, h, 3, 2));
        escrow.openLease(o, sig, 3, PRICE * 3 * 3600);
        escrow.openLease(o, sig, 2, PRICE * 2 * 3600);
        vm.stopPrank();
        assertEq(escrow.offerGpusInUse(h), 8);
    }

    function test_CapacityReleasedOnFinalize() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.expiresAt = uint64(block.timestamp + 1 days);
        bytes memory sig = _signOffer(o);
        bytes32 h = escrow.hashOffer(o);
        vm.prank(consumer);
        uint256 id = escrow.openLease(o, sig, 8, PRICE * 8 * 3600);
        vm.prank(consumer);
        escrow.closeLease(id);
        // Closed but not finalized: capacity still held.
        assertEq(escrow.offerGpusInUse(h), 8);
        vm.warp(block.timestamp + SETTLEMENT_WINDOW);
        escrow.finalizeLease(id);
        assertEq(escrow.offerGpusInUse(h), 0);
        vm.prank(consumer);
        escrow.openLease(o, sig, 8, PRICE * 8 * 3600);
    }

    function test_RevertWhen_DepositTooLow() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        uint256 min = PRICE * 2 * o.minDuration;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_DepositTooLow.selector, min - 1, min));
        escrow.openLease(o, sig, 2, min - 1);
    }

    function test_RevertWhen_DepositTooHigh() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.maxDuration = 100;
        bytes memory sig = _signOffer(o);
        uint256 max = PRICE * 100;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_DepositTooHigh.selector, max + 1, max));
        escrow.openLease(o, sig, 1, max + 1);
    }

    function test_RevertWhen_ProviderNotRegistered() public {
        uint256 key = 0xD00D;
        address p2 = vm.addr(key);
        _fundAndStake(p2, MIN_STAKE);
        ILeaseEscrow.Offer memory o = _offer();
        o.provider = p2;
        bytes memory sig = _sign(key, _digest(escrow, escrow.hashOffer(o)));
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotRegistered.selector, p2));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_ProviderStakeBelowMinimum() public {
        uint256 key = 0xD00D;
        address p2 = vm.addr(key);
        _fundAndStake(p2, MIN_STAKE - 1);
        vm.prank(p2);
        staking.register(NODE_KEY, "");
        ILeaseEscrow.Offer memory o = _offer();
        o.provider = p2;
        bytes memory sig = _sign(key, _digest(escrow, escrow.hashOffer(o)));
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(IProviderStaking.ProviderStaking_NotRegistered.selector, p2));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_ProviderFreeStakeTooLow() public {
        uint256 key = 0xD00D;
        address p2 = vm.addr(key);
        _fundAndStake(p2, MIN_STAKE);
        vm.prank(p2);
        staking.register(NODE_KEY, "");
        ILeaseEscrow.Offer memory o = _offer();
        o.provider = p2;
        o.pricePerGpuSecond = 1 ether;
        bytes memory sig = _sign(key, _digest(escrow, escrow.hashOffer(o)));
        uint256 deposit = 1 ether * 8 * 3600;
        uint256 collateral = deposit * COLLATERAL_BPS / 10_000;
        vm.prank(consumer);
        vm.expectRevert(
            abi.encodeWithSelector(
                IProviderStaking.ProviderStaking_InsufficientFreeStake.selector, p2, collateral, MIN_STAKE
            )
        );
        escrow.openLease(o, sig, 8, deposit);
    }

    function test_TopUp() public {
        uint256 id = _open(2, 3600);
        ILeaseEscrow.Lease memory before = escrow.getLease(id);
        uint256 amount = PRICE * 2 * 1800;
        uint256 newDeposit = before.deposit + amount;
        _fund(stranger, amount);
        vm.startPrank(stranger);
        token.approve(address(escrow), amount);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseToppedUp(
            id,
            provider,
            consumer,
            stranger,
            amount,
            newDeposit,
            uint64(before.startedAt + 5400),
            newDeposit * COLLATERAL_BPS / 10_000
        );
        escrow.topUp(id, amount);
        vm.stopPrank();
        ILeaseEscrow.Lease memory l = escrow.getLease(id);
        assertEq(l.deposit, newDeposit);
        assertEq(l.endsAt, before.startedAt + 5400);
        assertEq(staking.lockedStake(provider), newDeposit * COLLATERAL_BPS / 10_000);
    }

    function test_RevertWhen_TopUpZero() public {
        uint256 id = _open(1, 3600);
        vm.prank(consumer);
        vm.expectRevert(ILeaseEscrow.LeaseEscrow_ZeroAmount.selector);
        escrow.topUp(id, 0);
    }

    function test_RevertWhen_TopUpLeaseNotOpen() public {
        uint256 id = _open(1, 3600);
        vm.prank(consumer);
        escrow.closeLease(id);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_LeaseNotOpen.selector, id));
        escrow.topUp(id, 1);
    }

    function test_RevertWhen_TopUpBeyondMaxDuration() public {
        uint256 id = _open(1, 30 days - 10);
        uint256 max = PRICE * 30 days;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_DepositTooHigh.selector, max + PRICE, max));
        escrow.topUp(id, PRICE * 11);
    }
}
