// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ILeaseEscrow} from "../interfaces/ILeaseEscrow.sol";

/// @dev The second storage slot of a lease, packed in one word: the only slot settlements, top-ups, closes and
/// liveness challenges write. Every read and write of its fields goes through `LeaseStateLibrary`.
///
/// Layout, from the least significant bit:
///   96 bits deposit | 64 bits settledGpuSeconds | 40 bits lastSeq | 16 bits feeBps | 7 bits status
///   | 1 bit cooldown | 32 bits time
///
/// - deposit: tokens deposited so far (open + top-ups); never above 2^96 - 1 (`openLease` and `topUp` cap it).
/// - settledGpuSeconds: cumulative usage of the last applied checkpoint; paid = price * settledGpuSeconds.
/// - lastSeq: seq of the last applied checkpoint (seqs above 2^40 - 1 are refused).
/// - feeBps: the protocol fee rate at open, fixed for the lease's life.
/// - status: an `ILeaseEscrow.LeaseStatus`.
/// - time (bits 224-255) holds one of three timestamps, told apart by the status and the cooldown bit (223; they
///   are never needed together): while the lease is Open it is `livenessDeadline`, the deadline of an unanswered
///   liveness challenge (0 when there is none), or, with the cooldown bit set, `challengeCooldownEnd`, before which
///   the consumer may not challenge again after an answer; closing the lease overwrites it with `closedAt`, the
///   close time (cooldown bit clear), which it keeps while Closed and Finalized. A lease can only be closed while
///   open, and a challenge only exists while open.
type LeaseState is bytes32;

using LeaseStateLibrary for LeaseState global;

library LeaseStateLibrary {
    uint256 internal constant MASK_7_BITS = 0x7F;
    uint256 internal constant MASK_16_BITS = 0xFFFF;
    uint256 internal constant MASK_32_BITS = 0xFFFFFFFF;
    uint256 internal constant MASK_40_BITS = 0xFFFFFFFFFF;
    uint256 internal constant MASK_64_BITS = 0xFFFFFFFFFFFFFFFF;
    uint256 internal constant MASK_96_BITS = 0xFFFFFFFFFFFFFFFFFFFFFFFF;

    uint8 internal constant SETTLED_GPU_SECONDS_OFFSET = 96;
    uint8 internal constant LAST_SEQ_OFFSET = 160;
    uint8 internal constant FEE_BPS_OFFSET = 200;
    uint8 internal constant STATUS_OFFSET = 216;
    /// @dev Offset of the cooldown bit: set while the time field is `challengeCooldownEnd` (see the layout).
    uint8 internal constant COOLDOWN_OFFSET = 223;
    /// @dev Offset of the time field: `livenessDeadline` or `challengeCooldownEnd` while Open, `closedAt` once
    /// Closed (see the layout).
    uint8 internal constant TIME_OFFSET = 224;
    /// @dev The cooldown bit and the time field (bits 223-255), which the time setters write together.
    uint256 internal constant TIME_AND_COOLDOWN_MASK =
        0xFFFFFFFF80000000000000000000000000000000000000000000000000000000;

    // #### CONSTRUCTOR ####

    /// @dev The state of a lease just opened: Open, the deposit and the fee rate set, everything else zero.
    function opened(uint96 deposit_, uint16 feeBps_) internal pure returns (LeaseState) {
        return LeaseState.wrap(
            bytes32(
                uint256(deposit_) | (uint256(feeBps_) << FEE_BPS_OFFSET)
                    | (uint256(ILeaseEscrow.LeaseStatus.Open) << STATUS_OFFSET)
            )
        );
    }

    // #### GETTERS ####

    function deposit(LeaseState packed) internal pure returns (uint96 result) {
        assembly ("memory-safe") {
            result := and(MASK_96_BITS, packed)
        }
    }

    function settledGpuSeconds(LeaseState packed) internal pure returns (uint64 result) {
        assembly ("memory-safe") {
            result := and(MASK_64_BITS, shr(SETTLED_GPU_SECONDS_OFFSET, packed))
        }
    }

    function lastSeq(LeaseState packed) internal pure returns (uint40 result) {
        assembly ("memory-safe") {
            result := and(MASK_40_BITS, shr(LAST_SEQ_OFFSET, packed))
        }
    }

    function feeBps(LeaseState packed) internal pure returns (uint16 result) {
        assembly ("memory-safe") {
            result := and(MASK_16_BITS, shr(FEE_BPS_OFFSET, packed))
        }
    }

    /// @dev `opened` and `setStatus` are the only writers of the status bits, always with a valid `LeaseStatus`.
    function status(LeaseState packed) internal pure returns (ILeaseEscrow.LeaseStatus result) {
        assembly ("memory-safe") {
            result := and(MASK_7_BITS, shr(STATUS_OFFSET, packed))
        }
    }

    /// @dev When the lease was closed; meaningful once the status is Closed or Finalized (0 while Open).
    function closedAt(LeaseState packed) internal pure returns (uint32 result) {
        assembly ("memory-safe") {
            result := shr(TIME_OFFSET, packed)
        }
    }

    /// @dev Deadline of an unanswered liveness challenge, 0 when there is none; meaningful only while Open.
    function livenessDeadline(LeaseState packed) internal pure returns (uint32 result) {
        assembly ("memory-safe") {
            result := mul(iszero(and(1, shr(COOLDOWN_OFFSET, packed))), shr(TIME_OFFSET, packed))
        }
    }

    /// @dev Time before which no new liveness challenge may be made (set by an answer), 0 when there is none;
    /// meaningful only while Open.
    function challengeCooldownEnd(LeaseState packed) internal pure returns (uint32 result) {
        assembly ("memory-safe") {
            result := mul(and(1, shr(COOLDOWN_OFFSET, packed)), shr(TIME_OFFSET, packed))
        }
    }

    // #### SETTERS ####

    function setDeposit(LeaseState packed, uint96 deposit_) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(and(not(MASK_96_BITS), packed), and(MASK_96_BITS, deposit_))
        }
    }

    function setSettledGpuSeconds(LeaseState packed, uint64 settled) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(
                and(not(shl(SETTLED_GPU_SECONDS_OFFSET, MASK_64_BITS)), packed),
                shl(SETTLED_GPU_SECONDS_OFFSET, and(MASK_64_BITS, settled))
            )
        }
    }

    function setLastSeq(LeaseState packed, uint40 seq) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(
                and(not(shl(LAST_SEQ_OFFSET, MASK_40_BITS)), packed),
                shl(LAST_SEQ_OFFSET, and(MASK_40_BITS, seq))
            )
        }
    }

    function setStatus(LeaseState packed, ILeaseEscrow.LeaseStatus status_) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(
                and(not(shl(STATUS_OFFSET, MASK_7_BITS)), packed),
                shl(STATUS_OFFSET, and(MASK_7_BITS, status_))
            )
        }
    }

    /// @dev Only when the lease closes (the status becomes Closed in the same write): ends any liveness challenge
    /// or cooldown.
    function setClosedAt(LeaseState packed, uint32 time) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(and(not(TIME_AND_COOLDOWN_MASK), packed), shl(TIME_OFFSET, and(MASK_32_BITS, time)))
        }
    }

    /// @dev Only while the lease is Open: `time` is the new challenge deadline, or 0 to end the challenge.
    function setLivenessDeadline(LeaseState packed, uint32 time) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(and(not(TIME_AND_COOLDOWN_MASK), packed), shl(TIME_OFFSET, and(MASK_32_BITS, time)))
        }
    }

    /// @dev Only while the lease is Open, when a challenge is answered: no new challenge before `time`.
    function setChallengeCooldownEnd(LeaseState packed, uint32 time) internal pure returns (LeaseState result) {
        assembly ("memory-safe") {
            result := or(
                and(not(TIME_AND_COOLDOWN_MASK), packed),
                or(shl(COOLDOWN_OFFSET, 1), shl(TIME_OFFSET, and(MASK_32_BITS, time)))
            )
        }
    }
}
