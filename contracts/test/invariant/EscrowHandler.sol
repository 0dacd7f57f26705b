// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {ProviderStaking} from "../../src/ProviderStaking.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {BlocklistToken} from "../mocks/BlocklistToken.sol";

/// @notice Drives the escrow with bounded, always-valid calls (fail_on_revert = true) and keeps ghost records:
/// leases and money (open, settle, top-up, close, finalize, withdrawals, fee changes), the fault paths (liveness
/// challenge / answer / resolve, claim / dispute / finalizeClaim, equivocation reports), and an issuer blocklist
/// that makes refunds and slash shares fail to transfer, so they are credited and withdrawn later.
contract EscrowHandler is CommonBase, StdCheats, StdUtils {
    uint256 internal constant PRICE = 1e12;
    uint256 internal constant MAX_LEASES = 40;
    uint256 internal constant BPS = 10_000;

    BlocklistToken internal immutable _token;
    LeaseEscrow internal immutable _escrow;
    ProviderStaking internal immutable _staking;
    uint256 internal immutable _settlementWindow;
    uint256 internal immutable _disputeWindow;
    uint256 internal immutable _collateralBps;
    uint256 internal immutable _livenessSlashBps;

    uint256[2] internal _providerKeys = [uint256(0xA11CE), uint256(0xB11CE)];
    address[3] internal _consumers;
    address[2] internal _finders = [address(0xF1), address(0xF2)];
    uint256 internal _nonce;

    uint256[] public leaseIds;
    mapping(uint256 leaseId => uint8) public ghostStatus;
    /// @dev The fee rate current when each lease was opened (the lease keeps it).
    mapping(uint256 leaseId => uint16) public ghostFeeBps;
    mapping(uint256 leaseId => uint256) public ghostDepositAtOpen;
    mapping(uint256 leaseId => uint256) public ghostDepositAtChallenge;
    uint256 public ghostFeesWithdrawn;
    /// @dev Stake the providers lost to slashes, as the handler expected each slash to be.
    uint256 public ghostSlashed;
    mapping(bytes4 selector => uint256) public calls;
    bool public statusWentBack;
    /// @dev Set when a slash differed from the amount due on the collateral at stake at the fault.
    bool public slashMismatch;

    constructor(BlocklistToken token_, LeaseEscrow escrow_, ProviderStaking staking_) {
        _token = token_;
        _escrow = escrow_;
        _staking = staking_;
        _settlementWindow = escrow_.settlementWindow();
        _disputeWindow = escrow_.disputeWindow();
        _collateralBps = escrow_.collateralBps();
        _livenessSlashBps = escrow_.livenessSlashBps();
        for (uint256 i; i < 3; ++i) {
            _consumers[i] = address(uint160(0xC0 + i));
            _token.mint(_consumers[i], 1_000_000 ether);
            vm.prank(_consumers[i]);
            _token.approve(address(escrow_), type(uint256).max);
        }
    }

    /*//////////////////////////////////////////////////////////////
                                VIEWS
    //////////////////////////////////////////////////////////////*/

    function providers() external view returns (address[2] memory ps) {
        ps[0] = vm.addr(_providerKeys[0]);
        ps[1] = vm.addr(_providerKeys[1]);
    }

    /// @dev Everyone who can be owed a refund or a slash share: consumers, finders, the staking treasury.
    function recipients() public view returns (address[6] memory rs) {
        for (uint256 i; i < 3; ++i) {
            rs[i] = _consumers[i];
        }
        rs[3] = _finders[0];
        rs[4] = _finders[1];
        rs[5] = _staking.treasury();
    }

    function leaseCount() external view returns (uint256) {
        return leaseIds.length;
    }

    /// @dev Fees of a lease so far: floor(settled * price * feeBps / 10_000) with its rate at open.
    function feesOf(uint256 id, ILeaseEscrow.Lease memory l) external view returns (uint256) {
        return l.paid * ghostFeeBps[id] / BPS;
    }

    /*//////////////////////////////////////////////////////////////
                            LEASES AND MONEY
    //////////////////////////////////////////////////////////////*/

    function open(uint256 providerSeed, uint256 consumerSeed, uint256 gpus, uint256 duration) external {
        if (leaseIds.length >= MAX_LEASES) return;
        address c = _consumers[consumerSeed % 3];
        if (_token.blocked(c)) return;
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
        vm.prank(c);
        uint256 id = _escrow.openLease(o, sig, g, PRICE * g * duration);
        ghostFeeBps[id] = rate;
        ghostDepositAtOpen[id] = PRICE * g * duration;
        leaseIds.push(id);
        _observe(id);
        ++calls[this.open.selector];
    }

    function settle(uint256 leaseSeed, uint256 usageSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || !_settleable(l)) return;
        uint64 cum = uint64(bound(usageSeed, l.settledGpuSeconds, _maxUsage(l)));
        ILeaseEscrow.UsageCheckpoint memory cp = _checkpoint(id, l.lastSeq + 1, cum, bytes32(usageSeed));
        bytes memory sig = _sign(_keyOf(l.provider), _escrow.hashCheckpoint(cp));
        vm.prank(l.consumer);
        _escrow.settle(id, cp, sig);
        _observe(id);
        ++calls[this.settle.selector];
    }

    function topUp(uint256 leaseSeed, uint256 secondsSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open || l.livenessDeadline != 0) return;
        if (_token.blocked(l.consumer)) return;
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
        uint256 expected = _missedDeadlineSlash(id, l);
        uint256 stakeBefore = _staking.stakeOf(l.provider);
        vm.prank(who);
        _escrow.closeLease(id);
        _checkSlash(l.provider, stakeBefore, expected);
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

    function withdrawRefund(uint256 consumerSeed) external {
        address c = _consumers[consumerSeed % 3];
        if (_escrow.refunds(c) == 0 || _token.blocked(c)) return;
        vm.prank(c);
        _escrow.withdrawRefund();
        ++calls[this.withdrawRefund.selector];
    }

    function withdrawSlashProceeds(uint256 recipientSeed) external {
        address r = recipients()[recipientSeed % 6];
        if (_staking.slashProceeds(r) == 0 || _token.blocked(r)) return;
        vm.prank(r);
        _staking.withdrawSlashProceeds();
        ++calls[this.withdrawSlashProceeds.selector];
    }

    function setFee(uint256 feeSeed) external {
        uint16 rate = uint16(bound(feeSeed, 0, _escrow.MAX_FEE_BPS()));
        vm.prank(_escrow.owner());
        _escrow.setFee(rate);
        ++calls[this.setFee.selector];
    }

    /// @dev The token issuer blocklists or releases a consumer, a finder or the staking treasury.
    function setBlocked(uint256 recipientSeed, bool value) external {
        _token.setBlocked(recipients()[recipientSeed % 6], value);
        ++calls[this.setBlocked.selector];
    }

    /// @dev Half the warps stay within the liveness and dispute windows (so answers and disputes happen), half go
    /// up to six hours (past deadlines, windows and lease ends).
    function warp(uint256 secondsSeed) external {
        uint256 max = secondsSeed % 2 == 0 ? 5 minutes : 6 hours;
        vm.warp(block.timestamp + bound(secondsSeed / 2, 1, max));
        ++calls[this.warp.selector];
    }

    /*//////////////////////////////////////////////////////////////
                        SILENT PROVIDER: LIVENESS
    //////////////////////////////////////////////////////////////*/

    function challenge(uint256 leaseSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open || l.livenessDeadline != 0) return;
        if (block.timestamp >= l.endsAt || block.timestamp < _escrow.challengeCooldownEnd(id)) return;
        vm.prank(l.consumer);
        _escrow.challengeLiveness(id);
        ghostDepositAtChallenge[id] = l.deposit;
        _observe(id);
        ++calls[this.challenge.selector];
    }

    function answer(uint256 leaseSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pickChallenged(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open || l.livenessDeadline == 0) return;
        if (block.timestamp >= l.livenessDeadline) return;
        vm.prank(l.provider);
        _escrow.answerLiveness(id);
        _observe(id);
        ++calls[this.answer.selector];
    }

    function resolve(uint256 leaseSeed, uint256 callerSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pickChallenged(leaseSeed);
        if (!ok || l.status != ILeaseEscrow.LeaseStatus.Open || l.livenessDeadline == 0) return;
        if (block.timestamp < l.livenessDeadline) return;
        uint256 expected = _missedDeadlineSlash(id, l);
        uint256 stakeBefore = _staking.stakeOf(l.provider);
        vm.prank(recipients()[callerSeed % 6]);
        _escrow.resolveLiveness(id);
        _checkSlash(l.provider, stakeBefore, expected);
        _observe(id);
        ++calls[this.resolve.selector];
    }

    /*//////////////////////////////////////////////////////////////
                        SILENT CONSUMER: CLAIMS
    //////////////////////////////////////////////////////////////*/

    function claim(uint256 leaseSeed, uint256 usageSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || !_settleable(l) || _escrow.getClaim(id).readyAt != 0) return;
        uint256 max = _maxUsage(l);
        if (max <= l.settledGpuSeconds) return;
        uint64 cum = uint64(bound(usageSeed, uint256(l.settledGpuSeconds) + 1, max));
        uint64 disputed = _escrow.disputedSeq(id);
        uint64 seq = (l.lastSeq > disputed ? l.lastSeq : disputed) + 1;
        ILeaseEscrow.UsageCheckpoint memory cp = _checkpoint(id, seq, cum, bytes32(usageSeed));
        bytes memory sig = _sign(_keyOf(l.provider), _escrow.hashCheckpoint(cp));
        vm.prank(l.provider);
        _escrow.claim(id, cp, sig);
        _observe(id);
        ++calls[this.claim.selector];
    }

    /// @dev The consumer holds a provider-signed checkpoint with a seq at or above the claim's and less usage.
    function dispute(uint256 leaseSeed, uint256 evidenceSeed) external {
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pickClaimed(leaseSeed);
        if (!ok) return;
        ILeaseEscrow.Claim memory c = _escrow.getClaim(id);
        if (c.readyAt == 0 || block.timestamp >= c.readyAt) return;
        uint64 seq = c.seq + uint64(evidenceSeed % 3);
        uint64 cum = uint64(bound(evidenceSeed, 0, uint256(c.cumulativeGpuSeconds) - 1));
        ILeaseEscrow.UsageCheckpoint memory cp = _checkpoint(id, seq, cum, keccak256("evidence"));
        bytes memory sig = _sign(_keyOf(l.provider), _escrow.hashCheckpoint(cp));
        vm.prank(l.consumer);
        _escrow.dispute(id, cp, sig);
        if (_escrow.disputedSeq(id) != seq) slashMismatch = true;
        _observe(id);
        ++calls[this.dispute.selector];
    }

    function finalizeClaim(uint256 leaseSeed) external {
        (bool ok, uint256 id,) = _pickClaimed(leaseSeed);
        if (!ok) return;
        ILeaseEscrow.Claim memory c = _escrow.getClaim(id);
        if (c.readyAt == 0 || block.timestamp < c.readyAt) return;
        _escrow.finalizeClaim(id);
        _observe(id);
        ++calls[this.finalizeClaim.selector];
    }

    /*//////////////////////////////////////////////////////////////
                            EQUIVOCATION
    //////////////////////////////////////////////////////////////*/

    /// @dev Someone holds two provider-signed checkpoints of one lease and seq with different usage. Only one
    /// call in four reports (a report ends the lease, and the other paths need open leases).
    function reportEquivocation(uint256 leaseSeed, uint256 finderSeed, uint256 seqSeed) external {
        if (seqSeed % 4 != 0) return;
        (bool ok, uint256 id, ILeaseEscrow.Lease memory l) = _pick(leaseSeed);
        if (!ok || (l.status != ILeaseEscrow.LeaseStatus.Open && l.status != ILeaseEscrow.LeaseStatus.Closed)) return;
        uint256 expected = _equivocationSlash(id, l);
        if (expected == 0) return;
        address finder = finderSeed % 2 == 0 ? _finders[finderSeed / 2 % 2] : l.consumer;
        uint256 stakeBefore = _staking.stakeOf(l.provider);
        _report(id, l.provider, finder, seqSeed);
        _checkSlash(l.provider, stakeBefore, expected);
        _observe(id);
        ++calls[this.reportEquivocation.selector];
    }

    /// @dev What a report slashes now: a missed deadline first (if it closes the lease), then the collateral of the
    /// opening deposit less everything slashed before; 0 when the report would find nothing to slash.
    function _equivocationSlash(uint256 id, ILeaseEscrow.Lease memory l) internal returns (uint256) {
        uint256 livenessSlash = _missedDeadlineSlash(id, l);
        uint256 slashedBefore = l.deposit * _collateralBps / BPS - l.collateral + livenessSlash;
        uint256 cap = ghostDepositAtOpen[id] * _collateralBps / BPS;
        return cap > slashedBefore ? livenessSlash + cap - slashedBefore : 0;
    }

    function _report(uint256 id, address provider, address finder, uint256 seqSeed) internal {
        uint64 seq = uint64(bound(seqSeed, 1, 1_000));
        ILeaseEscrow.UsageCheckpoint memory a = _checkpoint(id, seq, 1, bytes32(seqSeed));
        ILeaseEscrow.UsageCheckpoint memory b = _checkpoint(id, seq, 2, bytes32(seqSeed));
        uint256 key = _keyOf(provider);
        bytes memory sigA = _sign(key, _escrow.hashCheckpoint(a));
        bytes memory sigB = _sign(key, _escrow.hashCheckpoint(b));
        vm.prank(finder);
        _escrow.reportEquivocation(id, a, sigA, b, sigB);
    }

    /*//////////////////////////////////////////////////////////////
                                DRAIN
    //////////////////////////////////////////////////////////////*/

    /// @dev Ends every lease and withdraws every balance: afterwards the escrow must hold nothing and no stake may
    /// stay locked. Lifts the blocklist first (credited amounts are withdrawn once the recipient can receive).
    function drain() external {
        address[6] memory rs = recipients();
        for (uint256 i; i < 6; ++i) {
            _token.setBlocked(rs[i], false);
        }
        uint256 n = leaseIds.length;
        for (uint256 i; i < n; ++i) {
            ILeaseEscrow.Lease memory l = _escrow.getLease(leaseIds[i]);
            if (l.status != ILeaseEscrow.LeaseStatus.Open) continue;
            vm.prank(l.consumer);
            _escrow.closeLease(leaseIds[i]);
        }
        vm.warp(block.timestamp + _settlementWindow + _disputeWindow);
        for (uint256 i; i < n; ++i) {
            if (_escrow.getClaim(leaseIds[i]).readyAt != 0) _escrow.finalizeClaim(leaseIds[i]);
        }
        for (uint256 i; i < n; ++i) {
            if (_escrow.getLease(leaseIds[i]).status == ILeaseEscrow.LeaseStatus.Closed) {
                _escrow.finalizeLease(leaseIds[i]);
            }
        }
        for (uint256 i; i < 2; ++i) {
            address p = vm.addr(_providerKeys[i]);
            if (_escrow.earnings(p) == 0) continue;
            vm.prank(p);
            _escrow.withdrawEarnings();
        }
        if (_escrow.accruedFees() != 0) {
            vm.prank(_escrow.treasury());
            ghostFeesWithdrawn += _escrow.withdrawFees(address(0xFEE));
        }
        for (uint256 i; i < 6; ++i) {
            if (i < 3 && _escrow.refunds(rs[i]) != 0) {
                vm.prank(rs[i]);
                _escrow.withdrawRefund();
            }
            if (_staking.slashProceeds(rs[i]) != 0) {
                vm.prank(rs[i]);
                _staking.withdrawSlashProceeds();
            }
        }
    }

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev The liveness slash that closing `l` now carries out: livenessSlashBps of the remaining collateral if
    /// a challenge's deadline was missed, else 0. Flags a deposit that moved since the challenge.
    function _missedDeadlineSlash(uint256 id, ILeaseEscrow.Lease memory l) internal returns (uint256) {
        if (l.status != ILeaseEscrow.LeaseStatus.Open || l.livenessDeadline == 0) return 0;
        if (block.timestamp < l.livenessDeadline) return 0;
        if (l.deposit != ghostDepositAtChallenge[id]) slashMismatch = true;
        return l.collateral * _livenessSlashBps / BPS;
    }

    function _checkSlash(address provider, uint256 stakeBefore, uint256 expected) internal {
        uint256 lost = stakeBefore - _staking.stakeOf(provider);
        if (lost != expected) slashMismatch = true;
        ghostSlashed += lost;
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

    /// @dev The first open lease with a pending or missed challenge, from a random start (ok = false if none).
    function _pickChallenged(uint256 seed) internal view returns (bool ok, uint256 id, ILeaseEscrow.Lease memory l) {
        uint256 n = leaseIds.length;
        for (uint256 i; i < n; ++i) {
            id = leaseIds[(seed % n + i) % n];
            l = _escrow.getLease(id);
            if (l.status == ILeaseEscrow.LeaseStatus.Open && l.livenessDeadline != 0) return (true, id, l);
        }
    }

    /// @dev The first lease with a pending claim, from a random start (ok = false if none).
    function _pickClaimed(uint256 seed) internal view returns (bool ok, uint256 id, ILeaseEscrow.Lease memory l) {
        uint256 n = leaseIds.length;
        for (uint256 i; i < n; ++i) {
            id = leaseIds[(seed % n + i) % n];
            if (_escrow.getClaim(id).readyAt != 0) return (true, id, _escrow.getLease(id));
        }
    }

    function _settleable(ILeaseEscrow.Lease memory l) internal view returns (bool) {
        if (l.status == ILeaseEscrow.LeaseStatus.Open) return true;
        return l.status == ILeaseEscrow.LeaseStatus.Closed && block.timestamp < uint256(l.closedAt) + _settlementWindow;
    }

    /// @dev gpus * (min(now, endsAt, closedAt) - startedAt): the most usage a checkpoint may carry now.
    function _maxUsage(ILeaseEscrow.Lease memory l) internal view returns (uint256) {
        uint256 end = l.endsAt;
        if (l.status == ILeaseEscrow.LeaseStatus.Closed && l.closedAt < end) end = l.closedAt;
        if (block.timestamp < end) end = block.timestamp;
        return uint256(l.gpus) * (end - l.startedAt);
    }

    function _checkpoint(uint256 id, uint64 seq, uint64 cum, bytes32 head)
        internal
        view
        returns (ILeaseEscrow.UsageCheckpoint memory)
    {
        return ILeaseEscrow.UsageCheckpoint({
            leaseId: id, seq: seq, cumulativeGpuSeconds: cum, heartbeatHead: head, timestamp: uint64(block.timestamp)
        });
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
