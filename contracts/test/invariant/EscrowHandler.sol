// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {DevToken} from "../../src/DevToken.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

/// @notice Drives the escrow with bounded, always-valid calls (fail_on_revert = true) and keeps ghost records.
contract EscrowHandler is CommonBase, StdCheats, StdUtils {
    uint256 internal constant PRICE = 1e12;
    uint256 internal constant MAX_LEASES = 40;

    DevToken internal immutable _token;
    LeaseEscrow internal immutable _escrow;
    uint256 internal immutable _settlementWindow;

    uint256[2] internal _providerKeys = [uint256(0xA11CE), uint256(0xB11CE)];
    address[3] internal _consumers;
    uint256 internal _nonce;

    uint256[] public leaseIds;
    mapping(uint256 leaseId => uint8) public ghostStatus;
    /// @dev The fee rate current when each lease was opened (the lease keeps it).
    mapping(uint256 leaseId => uint16) public ghostFeeBps;
    uint256 public ghostFeesWithdrawn;
    mapping(bytes4 selector => uint256) public calls;
    bool public statusWentBack;

    constructor(DevToken token_, LeaseEscrow escrow_) {
        _token = token_;
        _escrow = escrow_;
        _settlementWindow = escrow_.settlementWindow();
        for (uint256 i; i < 3; ++i) {
            _consumers[i] = address(uint160(0xC0 + i));
            _token.mint(_consumers[i], 1_000_000 ether);
            vm.prank(_consumers[i]);
            _token.approve(address(escrow_), type(uint256).max);
        }
    }

    function providers() external view returns (address[2] memory ps) {
        ps[0] = vm.addr(_providerKeys[0]);
        ps[1] = vm.addr(_providerKeys[1]);
    }

    function leaseCount() external view returns (uint256) {
        return leaseIds.length;
    }

    function open(uint256 providerSeed, uint256 consumerSeed, uint256 gpus, uint256 duration) external {
        if (leaseIds.length >= MAX_LEASES) return;
        uint256 key = _providerKeys[providerSeed % 2];
        ILeaseEscrow.Offer memory o = ILeaseEscrow.Offer({
            provider: vm.addr(key),
            nonce: ++_nonce,
            gpuModel: bytes32("H100-80GB"),
            gpuCount: 8,
            vramMiB: 81_920,
            pricePerGpuSecond: PRICE,
            minDuration: 60,
            maxDuration: 10 days,
            expiresAt: uint64(block.timestamp + 1),
            specHash: bytes32(0)
        });
        bytes memory sig = _sign(key, _escrow.hashOffer(o));
        uint32 g = uint32(bound(gpus, 1, 8));
        duration = bound(duration, 60, 2 days);
        uint16 rate = _escrow.feeBps();
        vm.prank(_consumers[consumerSeed % 3]);
        uint256 id = _escrow.openLease(o, sig, g, PRICE * g * duration);
        ghostFeeBps[id] = rate;
        leaseIds.push(id);
        _observe(id);
        ++calls[this.open.selector];
    }

    function settle(uint256 leaseSeed, uint256 usageSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || !_settleable(l)) return;
        uint256 end = l.endsAt;
        if (l.status == ILeaseEscrow.LeaseStatus.Closed && l.closedAt < end) end = l.closedAt;
        if (block.timestamp < end) end = block.timestamp;
        uint256 max = uint256(l.gpus) * (end - l.startedAt);
        uint64 cum = uint64(bound(usageSeed, l.settledGpuSeconds, max));
        ILeaseEscrow.UsageCheckpoint memory cp = ILeaseEscrow.UsageCheckpoint({
            leaseId: id,
            seq: l.lastSeq + 1,
            cumulativeGpuSeconds: cum,
            heartbeatHead: bytes32(usageSeed),
            timestamp: uint64(block.timestamp)
        });
        bytes memory sig = _sign(_keyOf(l.provider), _escrow.hashCheckpoint(cp));
        vm.prank(l.consumer);
        _escrow.settle(id, cp, sig);
        _observe(id);
        ++calls[this.settle.selector];
    }

    function topUp(uint256 leaseSeed, uint256 secondsSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open) return;
        uint256 rate = PRICE * l.gpus;
        uint256 room = (uint256(l.maxEndsAt) - l.startedAt) * rate - l.deposit;
        if (room == 0) return;
        uint256 amount = bound(secondsSeed, 1, room);
        vm.prank(l.consumer);
        _escrow.topUp(id, amount);
        _observe(id);
        ++calls[this.topUp.selector];
    }

    function close(uint256 leaseSeed, bool byProvider) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open) return;
        address who = byProvider && block.timestamp >= l.endsAt ? l.provider : l.consumer;
        vm.prank(who);
        _escrow.closeLease(id);
        _observe(id);
        ++calls[this.close.selector];
    }

    function finalize(uint256 leaseSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Closed) return;
        if (block.timestamp < uint256(l.closedAt) + _settlementWindow) return;
        if (_escrow.getClaim(id).readyAt != 0) return;
        _escrow.finalizeLease(id);
        _observe(id);
        ++calls[this.finalize.selector];
    }

    function withdrawEarnings(uint256 providerSeed) external {
        address p = vm.addr(_providerKeys[providerSeed % 2]);
        if (_escrow.earnings(p) == 0) return;
        vm.prank(p);
        _escrow.withdrawEarnings();
        ++calls[this.withdrawEarnings.selector];
    }

    function withdrawFees() external {
        if (_escrow.accruedFees() == 0) return;
        vm.prank(_escrow.treasury());
        ghostFeesWithdrawn += _escrow.withdrawFees(address(0xFEE));
        ++calls[this.withdrawFees.selector];
    }

    function setFee(uint256 feeSeed) external {
        uint16 rate = uint16(bound(feeSeed, 0, _escrow.MAX_FEE_BPS()));
        vm.prank(_escrow.owner());
        _escrow.setFee(rate);
        ++calls[this.setFee.selector];
    }

    /// @dev Fees of a lease so far: floor(settled * price * feeBps / 10_000) with its rate at open.
    function feesOf(uint256 id, ILeaseEscrow.Lease memory l) external view returns (uint256) {
        return l.paid * ghostFeeBps[id] / 10_000;
    }

    function warp(uint256 secondsSeed) external {
        vm.warp(block.timestamp + bound(secondsSeed, 1, 6 hours));
        ++calls[this.warp.selector];
    }

    /// @dev Records the status and flags any backward move.
    function _observe(uint256 id) internal {
        uint8 s = uint8(_escrow.getLease(id).status);
        if (s < ghostStatus[id]) statusWentBack = true;
        ghostStatus[id] = s;
    }

    function observeAll() external {
        for (uint256 i; i < leaseIds.length; ++i) {
            _observe(leaseIds[i]);
        }
    }

    function _pick(uint256 seed) internal view returns (bool ok, uint256 id, ILeaseEscrow.Lease memory l) {
        if (leaseIds.length == 0) return (false, 0, l);
        id = leaseIds[seed % leaseIds.length];
        l = _escrow.getLease(id);
        ok = true;
    }

    function _settleable(ILeaseEscrow.Lease memory l) internal view returns (bool) {
        if (l.status == ILeaseEscrow.LeaseStatus.Open) return true;
        return l.status == ILeaseEscrow.LeaseStatus.Closed && block.timestamp < uint256(l.closedAt) + _settlementWindow;
    }

    function _keyOf(address p) internal view returns (uint256) {
        return vm.addr(_providerKeys[0]) == p ? _providerKeys[0] : _providerKeys[1];
    }

    function _sign(uint256 key, bytes32 structHash) internal view returns (bytes memory) {
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", _escrow.domainSeparator(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}
