// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {LeaseState, LeaseStateLibrary} from "../../src/types/LeaseState.sol";

/// @dev The packed lease state word: each setter writes its own bits only, each getter reads them back, and the
/// layout is the one of the struct it replaced (deposit lowest, then settled, lastSeq, feeBps, status, time), with
/// the top bit of the old status byte now the cooldown bit.
contract LeaseStateTest is Test {
    /// @dev Every bit below the cooldown bit (223) and the time field.
    uint256 private constant _LOW_223 = (uint256(1) << 223) - 1;

    function _word(LeaseState st) private pure returns (uint256) {
        return uint256(LeaseState.unwrap(st));
    }

    function _status(uint8 raw) private pure returns (ILeaseEscrow.LeaseStatus) {
        return ILeaseEscrow.LeaseStatus(bound(raw, 0, uint8(type(ILeaseEscrow.LeaseStatus).max)));
    }

    function test_Opened_Layout() public pure {
        LeaseState st = LeaseStateLibrary.opened(123_456, 250);
        assertEq(_word(st), 123_456 | (uint256(250) << 200) | (uint256(1) << 216));
        assertEq(st.deposit(), 123_456);
        assertEq(st.feeBps(), 250);
        assertEq(uint8(st.status()), uint8(ILeaseEscrow.LeaseStatus.Open));
        assertEq(st.settledGpuSeconds(), 0);
        assertEq(st.lastSeq(), 0);
        assertEq(st.livenessDeadline(), 0);
        assertEq(st.challengeCooldownEnd(), 0);
    }

    function testFuzz_Opened(uint96 deposit, uint16 feeBps) public pure {
        LeaseState st = LeaseStateLibrary.opened(deposit, feeBps);
        assertEq(st.deposit(), deposit);
        assertEq(st.feeBps(), feeBps);
        assertEq(uint8(st.status()), uint8(ILeaseEscrow.LeaseStatus.Open));
        assertEq(_word(st) >> 224, 0);
    }

    /// @dev The field offsets and widths the storage layout depends on.
    function test_Layout_FieldBits() public pure {
        LeaseState zero = LeaseState.wrap(0);
        assertEq(_word(zero.setDeposit(type(uint96).max)), type(uint96).max);
        assertEq(_word(zero.setSettledGpuSeconds(type(uint64).max)), uint256(type(uint64).max) << 96);
        assertEq(_word(zero.setLastSeq(type(uint40).max)), uint256(type(uint40).max) << 160);
        assertEq(_word(zero.setStatus(ILeaseEscrow.LeaseStatus.Finalized)), uint256(3) << 216);
        assertEq(_word(zero.setClosedAt(type(uint32).max)), uint256(type(uint32).max) << 224);
        assertEq(_word(zero.setLivenessDeadline(type(uint32).max)), uint256(type(uint32).max) << 224);
        assertEq(_word(zero.setChallengeCooldownEnd(type(uint32).max)), (uint256(type(uint32).max) << 224) | (1 << 223));
    }

    function testFuzz_Getters(bytes32 raw) public pure {
        uint256 w = uint256(raw);
        // Keep the status bits a valid LeaseStatus, as every writer does (the cooldown bit 223 stays random).
        w = (w & ~(uint256(0x7F) << 216)) | (uint256(uint8(w >> 216) % 4) << 216);
        LeaseState st = LeaseState.wrap(bytes32(w));
        assertEq(st.deposit(), uint96(w));
        assertEq(st.settledGpuSeconds(), uint64(w >> 96));
        assertEq(st.lastSeq(), uint40(w >> 160));
        assertEq(st.feeBps(), uint16(w >> 200));
        assertEq(uint8(st.status()), uint8(w >> 216) & 0x7F);
        assertEq(st.closedAt(), uint32(w >> 224));
        bool cooldown = (w >> 223) & 1 == 1;
        assertEq(st.livenessDeadline(), cooldown ? 0 : uint32(w >> 224));
        assertEq(st.challengeCooldownEnd(), cooldown ? uint32(w >> 224) : 0);
    }

    function testFuzz_SetDeposit_KeepsOtherBits(bytes32 raw, uint96 value) public pure {
        LeaseState st = LeaseState.wrap(raw).setDeposit(value);
        assertEq(st.deposit(), value);
        assertEq(_word(st) >> 96, uint256(raw) >> 96);
    }

    function testFuzz_SetSettledGpuSeconds_KeepsOtherBits(bytes32 raw, uint64 value) public pure {
        LeaseState st = LeaseState.wrap(raw).setSettledGpuSeconds(value);
        assertEq(st.settledGpuSeconds(), value);
        uint256 mask = uint256(type(uint64).max) << 96;
        assertEq(_word(st) & ~mask, uint256(raw) & ~mask);
    }

    function testFuzz_SetLastSeq_KeepsOtherBits(bytes32 raw, uint40 value) public pure {
        LeaseState st = LeaseState.wrap(raw).setLastSeq(value);
        assertEq(st.lastSeq(), value);
        uint256 mask = uint256(type(uint40).max) << 160;
        assertEq(_word(st) & ~mask, uint256(raw) & ~mask);
    }

    function testFuzz_SetStatus_KeepsOtherBits(bytes32 raw, uint8 value) public pure {
        ILeaseEscrow.LeaseStatus status = _status(value);
        LeaseState st = LeaseState.wrap(raw).setStatus(status);
        assertEq(uint8(st.status()), uint8(status));
        uint256 mask = uint256(0x7F) << 216;
        assertEq(_word(st) & ~mask, uint256(raw) & ~mask);
    }

    function testFuzz_SetClosedAt_KeepsOtherBits(bytes32 raw, uint32 value) public pure {
        LeaseState st = LeaseState.wrap(raw).setClosedAt(value);
        assertEq(st.closedAt(), value);
        assertEq(st.challengeCooldownEnd(), 0);
        assertEq(_word(st) & _LOW_223, uint256(raw) & _LOW_223);
        assertEq((_word(st) >> 223) & 1, 0);
    }

    function testFuzz_SetChallengeCooldownEnd_KeepsOtherBits(bytes32 raw, uint32 value) public pure {
        LeaseState st = LeaseState.wrap(raw).setChallengeCooldownEnd(value);
        assertEq(st.challengeCooldownEnd(), value);
        assertEq(st.livenessDeadline(), 0);
        assertEq(_word(st) & _LOW_223, uint256(raw) & _LOW_223);
        // An answer followed by a new challenge: the deadline replaces the cooldown.
        st = st.setLivenessDeadline(value);
        assertEq(st.livenessDeadline(), value);
        assertEq(st.challengeCooldownEnd(), 0);
    }

    /// @dev The liveness deadline lives in the bits closedAt takes at close: closing ends any challenge.
    function testFuzz_LivenessDeadline_SharesTimeBitsWithClosedAt(bytes32 raw, uint32 deadline, uint32 closedAt)
        public
        pure
    {
        LeaseState st = LeaseState.wrap(raw).setLivenessDeadline(deadline);
        assertEq(st.livenessDeadline(), deadline);
        assertEq(_word(st) & _LOW_223, uint256(raw) & _LOW_223);
        st = st.setStatus(ILeaseEscrow.LeaseStatus.Closed).setClosedAt(closedAt);
        assertEq(st.closedAt(), closedAt);
        assertEq(st.livenessDeadline(), closedAt);
    }
}
