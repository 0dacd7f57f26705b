// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Base} from "../utils/Base.t.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

contract SignaturesTest is Base {
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function test_TypeHashesAndDomainMatchSpec() public view {
        bytes32 typeHash =
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
        bytes32 expected = keccak256(
            abi.encode(typeHash, keccak256("gpunet LeaseEscrow"), keccak256("1"), block.chainid, address(escrow))
        );
        assertEq(escrow.domainSeparator(), expected);
        ILeaseEscrow.Offer memory o = _offer();
        bytes32 offerType = keccak256(
            "Offer(address provider,uint256 nonce,bytes32 gpuModel,uint32 gpuCount,uint32 vramMiB,uint256 pricePerGpuSecond,uint64 minDuration,uint64 maxDuration,uint64 expiresAt,bytes32 specHash)"
        );
        assertEq(
            escrow.hashOffer(o),
            keccak256(
                abi.encode(
                    offerType,
                    o.provider,
                    o.nonce,
                    o.gpuModel,
                    o.gpuCount,
                    o.vramMiB,
                    o.pricePerGpuSecond,
                    o.minDuration,
                    o.maxDuration,
                    o.expiresAt,
                    o.specHash
                )
            )
        );
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(1, 2, 3);
        bytes32 cpType = keccak256(
            "UsageCheckpoint(uint256 leaseId,uint64 seq,uint64 cumulativeGpuSeconds,bytes32 heartbeatHead,uint64 timestamp)"
        );
        assertEq(
            escrow.hashCheckpoint(cp),
            keccak256(abi.encode(cpType, cp.leaseId, cp.seq, cp.cumulativeGpuSeconds, cp.heartbeatHead, cp.timestamp))
        );
    }

    function test_RevertWhen_OfferReplayedAcrossChainId() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.chainId(block.chainid + 1);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_OfferReplayedAcrossEscrow() public {
        LeaseEscrow other = _deployEscrow();
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        vm.startPrank(consumer);
        token.approve(address(other), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        other.openLease(o, sig, 1, PRICE * 3600);
        vm.stopPrank();
    }

    function test_RevertWhen_CheckpointReplayedAcrossChainId() public {
        uint256 id = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(id, 1, 50);
        bytes memory sig = _signCp(providerKey, cp);
        vm.chainId(block.chainid + 1);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.settle(id, cp, sig);
    }

    function test_RevertWhen_CheckpointReplayedAcrossEscrow() public {
        LeaseEscrow other = _deployEscrow();
        uint256 id = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        // A signature made for the first escrow's domain.
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(id, 1, 50);
        bytes memory sig = _signCp(providerKey, cp);
        // The checkpoint recomputed under the other escrow's domain recovers to someone else.
        bytes32 d1 = _digest(escrow, escrow.hashCheckpoint(cp));
        bytes32 d2 = _digest(other, other.hashCheckpoint(cp));
        assertTrue(d1 != d2);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NotConsumer.selector, id, consumer));
        other.settle(id, cp, sig);
    }

    function test_RevertWhen_CheckpointReplayedAcrossLeases() public {
        uint256 a = _open(1, 3600);
        uint256 b = _open(1, 3600);
        vm.warp(block.timestamp + 100);
        ILeaseEscrow.UsageCheckpoint memory cp = _cp(a, 1, 50);
        bytes memory sig = _signCp(providerKey, cp);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_CheckpointLeaseMismatch.selector, b, a));
        escrow.settle(b, cp, sig);
        // Rewriting the lease id breaks the signature.
        cp.leaseId = b;
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.settle(b, cp, sig);
    }

    function test_RevertWhen_HighSSignature() public {
        ILeaseEscrow.Offer memory o = _offer();
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(providerKey, _digest(escrow, escrow.hashOffer(o)));
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        uint8 flippedV = v == 27 ? 28 : 27;
        bytes memory sig = abi.encodePacked(r, highS, flippedV);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, sig, 1, PRICE * 3600);
    }

    function test_RevertWhen_MalformedSignature() public {
        ILeaseEscrow.Offer memory o = _offer();
        bytes memory sig = _signOffer(o);
        bytes memory short = new bytes(64);
        for (uint256 i; i < 64; ++i) {
            short[i] = sig[i];
        }
        vm.startPrank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, short, 1, PRICE * 3600);
        bytes memory badV = bytes.concat(short, bytes1(uint8(29)));
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, badV, 1, PRICE * 3600);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, "", 1, PRICE * 3600);
        vm.stopPrank();
    }

    function test_OfferNoncesGovernCancellation() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.nonce = 5;
        bytes memory sig = _signOffer(o);
        vm.prank(provider);
        escrow.cancelOffersBelow(5);
        // nonce == minNonce is still alive.
        vm.prank(consumer);
        escrow.openLease(o, sig, 1, PRICE * 3600);
        vm.prank(provider);
        escrow.cancelOffersBelow(6);
        // The very same signature is dead now; a fresh signature of the same offer is dead too.
        bytes memory sig2 = _signOffer(o);
        vm.startPrank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_OfferCancelled.selector, provider, 5, 6));
        escrow.openLease(o, sig, 1, PRICE * 3600);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_OfferCancelled.selector, provider, 5, 6));
        escrow.openLease(o, sig2, 1, PRICE * 3600);
        vm.stopPrank();
    }

    function test_RevertWhen_CancelNonceNotIncreasing() public {
        vm.startPrank(provider);
        escrow.cancelOffersBelow(3);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_NonceNotIncreasing.selector, 3, 3));
        escrow.cancelOffersBelow(3);
        vm.stopPrank();
    }

    function test_CapacityKeyedByStructHashNotSignature() public {
        ILeaseEscrow.Offer memory o = _offer();
        o.gpuCount = 1;
        bytes32 digest = _digest(escrow, escrow.hashOffer(o));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(providerKey, digest);
        bytes memory sig1 = abi.encodePacked(r, s, v);
        vm.prank(consumer);
        escrow.openLease(o, sig1, 1, PRICE * 3600);
        // A different valid encoding of the same signature (compact-to-65 variants are not accepted; re-signing
        // yields the same deterministic signature): capacity is exhausted regardless of the signature bytes.
        bytes32 h = escrow.hashOffer(o);
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InsufficientCapacity.selector, h, 1, 0));
        escrow.openLease(o, sig1, 1, PRICE * 3600);
        // A malleated (high-s) copy is rejected outright.
        bytes memory sig2 = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.prank(consumer);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseEscrow_InvalidSignature.selector, provider));
        escrow.openLease(o, sig2, 1, PRICE * 3600);
    }
}
