// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ILeaseEscrow} from "../interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "../interfaces/IProviderStaking.sol";
import {LeaseState} from "../types/LeaseState.sol";

/// @title LeaseEscrowBase
/// @notice Storage, configuration and the rules shared by the lease, settlement and fault paths of `LeaseEscrow`.
/// @dev Storage is laid out for the hot paths:
/// - a lease is two slots: `LeaseHead` (consumer, offer id, gpus, startedAt), set at open and never written again,
///   and `LeaseState` (deposit, settled usage, last seq, fee rate, status, closedAt or liveness deadline; see
///   types/LeaseState.sol), the only slot settlements, top-ups, closes and liveness challenges write;
/// - an offer gets a sequential uint32 id at its first lease; its terms (provider, price, maxDuration) are stored
///   once per id in `OfferTerms`, so a settlement finds everything in three slots (two of the lease, one of the
///   offer); `OfferSlot` (id, GPUs in use), keyed by the offer hash, is what `openLease` reads and writes;
/// - `paid` is not stored: it is always `price * settledGpuSeconds` (settlements are capped by elapsed paid-through
///   time, so they never exceed the deposit); `endsAt` and `maxEndsAt` are derived from the deposit, startedAt and
///   the offer's maxDuration;
/// - lease collateral is `deposit * collateralBps / 10_000` minus what was slashed (top-ups lock the difference);
///   the deposit a lease opened with, which caps an equivocation slash, is stored only by its first top-up;
/// - a lease's claim slot also keeps its disputed seq (claims must carry a higher seq), so it is never deleted;
/// - refunds whose transfer failed at finalization are credited per consumer (`withdrawRefund`);
/// - the fee rate is fixed per lease (copied into `LeaseState` at open) and a lease's fees are a function of its
///   settled usage: feeCum(x) = floor(x * price * feeBps / 10_000). A settlement credits the provider
///   amount - (feeCum(new) - feeCum(old)) and writes no protocol-wide slot; the lease's total feeCum(settled) is
///   added to `accruedFees` (the slot that also holds the current fee rate and the counters) once, at finalization;
/// - a provider's earnings slot stores earnings + 1 once it was first credited and keeps 1 after a withdrawal, so
///   later credits rewrite a non-zero slot.
/// Timestamps are stored as uint32 (valid until 2106).
abstract contract LeaseEscrowBase is ILeaseEscrow, EIP712, Ownable, ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev Slot 0 of a lease: set at open, never written again.
    struct LeaseHead {
        address consumer;
        uint32 offerId;
        uint32 gpus;
        uint32 startedAt;
    }

    /// @dev A lease: the head (slot 0) and the packed state word (slot 1, see types/LeaseState.sol).
    struct LeaseData {
        LeaseHead head;
        LeaseState state;
    }

    /// @dev Per offer id, one slot, written once (at the offer's first lease). `maxDuration` is capped at 2^32 - 1,
    /// which leaves maxEndsAt = min(startedAt + maxDuration, 2^32 - 1) unchanged.
    struct OfferTerms {
        address provider;
        uint64 pricePerGpuSecond;
        uint32 maxDuration;
    }

    /// @dev Per offer hash, one slot: the offer's id (0 before its first lease) and its GPUs in use.
    struct OfferSlot {
        uint32 id;
        uint32 gpusInUse;
    }

    /// @dev Protocol-wide hot values, one slot.
    struct Globals {
        uint128 accruedFees;
        uint64 leaseCount;
        uint16 feeBps;
        uint32 offerCount;
    }

    /// @dev A provider's pending claim (`readyAt` = 0 when there is none) and, in the same slot, the highest seq a
    /// dispute refuted: a claim must carry a higher seq (it outlives the claims, so the slot is never deleted).
    struct ClaimData {
        uint64 seq;
        uint64 cumulativeGpuSeconds;
        uint64 readyAt;
        uint64 disputedSeq;
    }

    /// @inheritdoc ILeaseEscrow
    uint16 public constant MAX_FEE_BPS = 1_000;

    /// @inheritdoc ILeaseEscrow
    uint32 public constant CHALLENGE_COOLDOWN_WINDOWS = 6;

    uint256 internal constant _BPS = 10_000;
    uint256 internal constant _MAX_SEQ = type(uint40).max;

    /// @dev keccak256 of the `Offer` type string of docs/spec.md.
    bytes32 internal constant _OFFER_TYPEHASH = keccak256(
        "Offer(address provider,uint256 nonce,bytes32 gpuModel,uint32 gpuCount,uint32 vramMiB,uint256 pricePerGpuSecond,uint64 minDuration,uint64 maxDuration,uint64 expiresAt,bytes32 specHash)"
    );
    /// @dev keccak256 of the `UsageCheckpoint` type string of docs/spec.md.
    bytes32 internal constant _CHECKPOINT_TYPEHASH = keccak256(
        "UsageCheckpoint(uint256 leaseId,uint64 seq,uint64 cumulativeGpuSeconds,bytes32 heartbeatHead,uint64 timestamp)"
    );

    IERC20 internal immutable _token;
    IProviderStaking internal immutable _staking;
    uint16 internal immutable _collateralBps;
    uint16 internal immutable _livenessSlashBps;
    uint32 internal immutable _settlementWindow;
    uint32 internal immutable _disputeWindow;
    uint32 internal immutable _livenessWindow;

    Globals internal _globals;
    address internal _treasury;
    mapping(uint256 leaseId => LeaseData) internal _leases;
    mapping(uint256 offerId => OfferTerms) internal _offers;
    mapping(bytes32 offerHash => OfferSlot) internal _offerSlots;
    mapping(uint256 offerId => bytes32) internal _offerHashes;
    mapping(uint256 leaseId => ClaimData) internal _claims;
    mapping(uint256 leaseId => uint256) internal _slashed;
    /// @dev The deposit a lease opened with, recorded at its first top-up (0 while it was never topped up).
    mapping(uint256 leaseId => uint256) internal _depositsAtOpen;
    mapping(address provider => uint256) internal _minNonces;
    mapping(address provider => uint256) internal _earnings;
    /// @dev Refunds whose transfer failed at finalization, owed to each consumer until it calls `withdrawRefund`.
    mapping(address consumer => uint256) internal _refunds;

    /// @param token_ Payment token (ERC-20; `openLeaseWithPermit` needs ERC-2612).
    /// @param staking_ The provider staking contract (its escrow must be set to this contract).
    /// @param owner_ Admin of the fee and the treasury.
    /// @param config Fee, collateral and slash basis points, windows in seconds, treasury.
    constructor(IERC20 token_, IProviderStaking staking_, address owner_, Config memory config)
        EIP712("gpunet LeaseEscrow", "1")
        Ownable(owner_)
    {
        if (address(token_) == address(0) || address(staking_) == address(0) || config.treasury == address(0)) {
            revert LeaseEscrow_ZeroAddress();
        }
        if (config.feeBps > MAX_FEE_BPS) revert LeaseEscrow_FeeTooHigh(config.feeBps);
        if (config.collateralBps > _BPS || config.livenessSlashBps > _BPS) revert LeaseEscrow_InvalidConfig();
        _token = token_;
        _staking = staking_;
        _collateralBps = config.collateralBps;
        _livenessSlashBps = config.livenessSlashBps;
        _settlementWindow = config.settlementWindow;
        _disputeWindow = config.disputeWindow;
        _livenessWindow = config.livenessWindow;
        _treasury = config.treasury;
        _globals.feeBps = config.feeBps;
    }

    /*//////////////////////////////////////////////////////////////
                            SHARED RULES
    //////////////////////////////////////////////////////////////*/

    /// @dev Applies a validated checkpoint: writes the lease state, returns the provider's share and the fee
    /// (feeCum(cumulative) - feeCum(settled); it stays in the escrow and is accrued at finalization).
    function _pay(LeaseData storage lease, LeaseState st, uint256 price, uint64 seq, uint64 cumulative)
        internal
        returns (uint256 net, uint256 fee)
    {
        uint256 settled = st.settledGpuSeconds();
        uint256 amount;
        unchecked {
            // cumulative >= settled was checked, and usage is capped by paid-through elapsed time
            // (gpus * (endsAt - startedAt) <= deposit / price), so paid = price * cumulative <= deposit.
            amount = price * (cumulative - settled);
            // feeCum is monotonic, and feeCum(new) - feeCum(old) <= ceil(amount * feeBps / 10_000) <= amount
            // since feeBps <= MAX_FEE_BPS < 10_000.
            uint256 rate = st.feeBps();
            fee = _feeCum(cumulative, price, rate) - _feeCum(settled, price, rate);
            net = amount - fee;
        }
        // One SSTORE of the whole state word. seq <= _MAX_SEQ = 2^40 - 1 was checked.
        lease.state = st.setSettledGpuSeconds(cumulative).setLastSeq(uint40(seq));
    }

    /// @dev Fees of a lease that settled `usage` GPU-seconds: floor(usage * price * feeBps / 10_000).
    /// usage < 2^64, price < 2^64 and feeBps < 2^16, so the product cannot overflow.
    function _feeCum(uint256 usage, uint256 price, uint256 feeBps_) internal pure returns (uint256) {
        unchecked {
            return usage * price * feeBps_ / _BPS;
        }
    }

    /// @dev The earnings slot holds earnings + 1 once credited (see the storage notes).
    function _addEarnings(address provider, uint256 net) internal {
        uint256 stored = _earnings[provider];
        _earnings[provider] = (stored == 0 ? 1 : stored) + net;
    }

    /// @dev Closes an open lease whose current state word is `st`: the time field becomes closedAt (which ends
    /// any liveness challenge). A challenge whose deadline has passed is resolved first, whoever closes and why:
    /// livenessSlashBps of the collateral is slashed (on the deposit at the challenge, which top-ups cannot change
    /// while it is pending). Returns that slash; the caller asks the staking contract to carry it out, last.
    function _close(LeaseData storage lease, LeaseState st, uint256 leaseId, address provider, address consumer)
        internal
        returns (uint256 livenessSlash)
    {
        uint256 deadline = st.livenessDeadline();
        lease.state = st.setStatus(LeaseStatus.Closed).setClosedAt(uint32(block.timestamp));
        emit LeaseClosed(leaseId, provider, consumer, msg.sender, uint64(block.timestamp));
        if (deadline != 0 && block.timestamp >= deadline) {
            livenessSlash = _collateral(leaseId, st.deposit()) * _livenessSlashBps / _BPS;
            if (livenessSlash != 0) _slashed[leaseId] += livenessSlash;
            emit LivenessResolved(leaseId, provider, consumer, livenessSlash);
        }
    }

    /// @dev Reverts unless the lease takes settlements (open, or closed within the settlement window).
    function _checkSettleable(uint256 leaseId, LeaseState st) internal view {
        LeaseStatus status = st.status();
        if (status == LeaseStatus.Open) return;
        if (status == LeaseStatus.Closed) {
            uint256 windowEnd = uint256(st.closedAt()) + _settlementWindow;
            if (block.timestamp >= windowEnd) revert LeaseEscrow_SettlementWindowClosed(leaseId, uint64(windowEnd));
            return;
        }
        if (status == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
        revert LeaseEscrow_LeaseNotFound(leaseId);
    }

    /// @dev Reverts unless `seq` is new and `cumulative` is monotonic and within gpus * elapsed paid-through time.
    function _checkUsage(
        uint256 leaseId,
        LeaseHead memory head,
        LeaseState st,
        OfferTerms memory o,
        uint64 seq,
        uint64 cumulative
    ) internal view {
        if (seq <= st.lastSeq() || seq > _MAX_SEQ) revert LeaseEscrow_StaleSeq(leaseId, seq, st.lastSeq());
        if (cumulative < st.settledGpuSeconds()) {
            revert LeaseEscrow_UsageDecreased(leaseId, cumulative, st.settledGpuSeconds());
        }
        uint256 end = _endsAt(head, o, st.deposit());
        if (st.status() == LeaseStatus.Closed && st.closedAt() < end) end = st.closedAt();
        if (block.timestamp < end) end = block.timestamp;
        uint256 maxUsage;
        unchecked {
            // end >= startedAt: every candidate is >= startedAt (closedAt and now are not before the open).
            maxUsage = uint256(head.gpus) * (end - head.startedAt);
        }
        if (cumulative > maxUsage) revert LeaseEscrow_UsageExceedsElapsed(leaseId, cumulative, maxUsage);
    }

    /// @dev Paid-through end: min(startedAt + deposit / (price * gpus), maxEndsAt).
    function _endsAt(LeaseHead memory head, OfferTerms memory o, uint256 deposit)
        internal
        pure
        returns (uint256 endsAt)
    {
        endsAt = uint256(head.startedAt) + deposit / (uint256(o.pricePerGpuSecond) * head.gpus);
        uint256 maxEndsAt = _maxEndsAt(head, o);
        if (endsAt > maxEndsAt) endsAt = maxEndsAt;
    }

    /// @dev startedAt + the offer's maxDuration, capped at 2^32 - 1.
    function _maxEndsAt(LeaseHead memory head, OfferTerms memory o) internal pure returns (uint256 maxEndsAt) {
        maxEndsAt = uint256(head.startedAt) + o.maxDuration;
        if (maxEndsAt > type(uint32).max) maxEndsAt = type(uint32).max;
    }

    /// @dev Collateral still locked for a lease: deposit * collateralBps / 10_000 minus what was slashed.
    function _collateral(uint256 leaseId, uint256 deposit) internal view returns (uint256) {
        return deposit * _collateralBps / _BPS - _slashed[leaseId];
    }

    /// @dev The slash of an equivocation: the collateral of the deposit the lease opened with, less what was already
    /// slashed (never more than the remaining collateral, which is at least that). When the provider signed the two
    /// checkpoints is not known on chain, and the opening deposit is the only one certainly at stake at any moment
    /// of the lease (deposits only grow), so a top-up made while holding the pair cannot raise the slash.
    function _equivocationSlash(uint256 leaseId, uint256 deposit) internal view returns (uint256) {
        uint256 atOpen = _depositsAtOpen[leaseId];
        if (atOpen == 0) atOpen = deposit;
        uint256 cap = atOpen * _collateralBps / _BPS;
        uint256 slashed = _slashed[leaseId];
        return cap > slashed ? cap - slashed : 0;
    }

    function _verify(bytes32 structHash, bytes calldata sig, address signer) internal view {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), sig);
        if (err != ECDSA.RecoverError.NoError || recovered != signer) revert LeaseEscrow_InvalidSignature(signer);
    }

    function _hashOffer(Offer calldata offer) internal pure returns (bytes32) {
        return keccak256(abi.encode(_OFFER_TYPEHASH, offer));
    }

    function _hashCheckpoint(UsageCheckpoint calldata cp) internal pure returns (bytes32) {
        return keccak256(abi.encode(_CHECKPOINT_TYPEHASH, cp));
    }
}
