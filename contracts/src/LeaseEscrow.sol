// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ILeaseEscrow} from "./interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "./interfaces/IProviderStaking.sol";

/// @title LeaseEscrow
/// @notice Escrow of gpunet GPU leases. See ILeaseEscrow and docs/spec.md.
/// @dev Storage is laid out for the hot paths:
/// - a lease is two slots: `LeaseHead` (consumer, offer id, gpus, startedAt), set at open and never written again,
///   and `LeaseState` (deposit, settled usage, last seq, fee rate, status, closedAt), the only slot settlements,
///   top-ups and closes write;
/// - an offer gets a sequential uint32 id at its first lease; its terms (provider, price, maxDuration) are stored
///   once per id in `OfferTerms`, so a settlement finds everything in three slots (two of the lease, one of the
///   offer); `OfferSlot` (id, GPUs in use), keyed by the offer hash, is what `openLease` reads and writes;
/// - `paid` is not stored: it is always `price * settledGpuSeconds` (settlements are capped by elapsed paid-through
///   time, so they never exceed the deposit); `endsAt` and `maxEndsAt` are derived from the deposit, startedAt and
///   the offer's maxDuration;
/// - lease collateral is `deposit * collateralBps / 10_000` minus what was slashed (top-ups lock the difference);
/// - the fee rate is fixed per lease (copied into `LeaseState` at open) and a lease's fees are a function of its
///   settled usage: feeCum(x) = floor(x * price * feeBps / 10_000). A settlement credits the provider
///   amount - (feeCum(new) - feeCum(old)) and writes no protocol-wide slot; the lease's total feeCum(settled) is
///   added to `accruedFees` (the slot that also holds the current fee rate and the counters) once, at finalization;
/// - a provider's earnings slot stores earnings + 1 once it was first credited and keeps 1 after a withdrawal, so
///   later credits rewrite a non-zero slot.
/// Timestamps are stored as uint32 (valid until 2106).
contract LeaseEscrow is ILeaseEscrow, EIP712, Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

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

    /// @dev Slot 1 of a lease: the only slot settlements, top-ups and closes write.
    /// `feeBps` is the protocol fee rate at open, fixed for the lease's life.
    /// `closedAt` holds the liveness-challenge deadline while the lease is open, and the close time afterwards.
    struct LeaseState {
        uint96 deposit;
        uint64 settledGpuSeconds;
        uint40 lastSeq;
        uint16 feeBps;
        LeaseStatus status;
        uint32 closedAt;
    }

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

    struct ClaimData {
        uint64 seq;
        uint64 cumulativeGpuSeconds;
        uint64 readyAt;
    }

    /// @inheritdoc ILeaseEscrow
    uint16 public constant MAX_FEE_BPS = 1_000;
    /// @inheritdoc ILeaseEscrow
    uint256 public constant MAX_BATCH_SIZE = 256;

    uint256 private constant _BPS = 10_000;
    uint256 private constant _MAX_SEQ = type(uint40).max;
    /// @dev Bit offsets of `Globals.leaseCount`, `Globals.feeBps` and `Globals.offerCount` in the globals slot.
    uint256 private constant _LEASE_COUNT_SHIFT = 128;
    uint256 private constant _FEE_BPS_SHIFT = 192;
    uint256 private constant _OFFER_COUNT_SHIFT = 208;

    /// @dev keccak256 of the `Offer` type string of docs/spec.md.
    bytes32 private constant _OFFER_TYPEHASH = keccak256(
        "Offer(address provider,uint256 nonce,bytes32 gpuModel,uint32 gpuCount,uint32 vramMiB,uint256 pricePerGpuSecond,uint64 minDuration,uint64 maxDuration,uint64 expiresAt,bytes32 specHash)"
    );
    /// @dev keccak256 of the `UsageCheckpoint` type string of docs/spec.md.
    bytes32 private constant _CHECKPOINT_TYPEHASH = keccak256(
        "UsageCheckpoint(uint256 leaseId,uint64 seq,uint64 cumulativeGpuSeconds,bytes32 heartbeatHead,uint64 timestamp)"
    );

    IERC20 private immutable _token;
    IProviderStaking private immutable _staking;
    uint16 private immutable _collateralBps;
    uint16 private immutable _livenessSlashBps;
    uint32 private immutable _settlementWindow;
    uint32 private immutable _disputeWindow;
    uint32 private immutable _livenessWindow;

    Globals private _globals;
    address private _treasury;
    mapping(uint256 leaseId => LeaseData) private _leases;
    mapping(uint256 offerId => OfferTerms) private _offers;
    mapping(bytes32 offerHash => OfferSlot) private _offerSlots;
    mapping(uint256 offerId => bytes32) private _offerHashes;
    mapping(uint256 leaseId => ClaimData) private _claims;
    mapping(uint256 leaseId => uint256) private _slashed;
    mapping(address provider => uint256) private _minNonces;
    mapping(address provider => uint256) private _earnings;

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
                                LEASES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function openLease(Offer calldata offer, bytes calldata providerSig, uint32 gpus, uint256 deposit)
        external
        nonReentrant
        returns (uint256 leaseId)
    {
        leaseId = _open(offer, providerSig, gpus, deposit);
    }

    /// @inheritdoc ILeaseEscrow
    function openLeaseWithPermit(
        Offer calldata offer,
        bytes calldata providerSig,
        uint32 gpus,
        uint256 deposit,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256 leaseId) {
        // A front-run permit consumes the nonce and makes this call revert; the allowance it set is what counts,
        // and transferFrom below fails if it is missing.
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), deposit, permitDeadline, v, r, s) {}
            catch {}
        leaseId = _open(offer, providerSig, gpus, deposit);
    }

    /// @inheritdoc ILeaseEscrow
    function topUp(uint256 leaseId, uint256 amount) external nonReentrant {
        if (amount == 0) revert LeaseEscrow_ZeroAmount();
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        if (st.status != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        LeaseHead memory head = lease.head;
        OfferTerms memory o = _offers[head.offerId];
        uint256 newDeposit = uint256(st.deposit) + amount;
        uint256 extraCollateral = newDeposit * _collateralBps / _BPS - uint256(st.deposit) * _collateralBps / _BPS;
        lease.state.deposit = uint96(newDeposit);
        _emitToppedUp(leaseId, head, o, amount, newDeposit);
        if (extraCollateral != 0) _staking.lockCollateral(o.provider, extraCollateral);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @inheritdoc ILeaseEscrow
    function settle(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external {
        _settleOne(leaseId, cp, providerSig, false);
    }

    /// @inheritdoc ILeaseEscrow
    function settleWithConsent(
        uint256 leaseId,
        UsageCheckpoint calldata cp,
        bytes calldata providerSig,
        bytes calldata consumerSig
    ) external {
        address consumer = _settleOne(leaseId, cp, providerSig, true);
        _verify(_hashCheckpoint(cp), consumerSig, consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function settleBatch(SettleItem[] calldata items) external returns (uint256 settledCount) {
        uint256 n = items.length;
        if (n == 0 || n > MAX_BATCH_SIZE) revert LeaseEscrow_InvalidBatchLength(n);
        // Earnings are summed per run of consecutive entries with the same provider and written once per run.
        address runProvider;
        uint256 runNet;
        for (uint256 i; i < n; ++i) {
            (address provider, uint256 net) = _settleItem(items[i]);
            if (provider == address(0)) continue;
            if (provider != runProvider) {
                if (runNet != 0) _addEarnings(runProvider, runNet);
                runProvider = provider;
                runNet = 0;
            }
            runNet += net;
            unchecked {
                // At most MAX_BATCH_SIZE increments.
                ++settledCount;
            }
        }
        if (runNet != 0) _addEarnings(runProvider, runNet);
    }

    /// @inheritdoc ILeaseEscrow
    function closeLease(uint256 leaseId) external {
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        LeaseState memory st = lease.state;
        if (st.status != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        if (msg.sender != head.consumer) {
            if (msg.sender != o.provider) revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
            uint256 endsAt = _endsAt(head, o, st.deposit);
            if (block.timestamp < endsAt) revert LeaseEscrow_LeaseNotEnded(leaseId, uint64(endsAt));
        }
        _close(lease, leaseId, o.provider, head.consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function finalizeLease(uint256 leaseId) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        if (st.status != LeaseStatus.Closed) {
            if (st.status == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
            if (st.status == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
            revert LeaseEscrow_LeaseNotClosed(leaseId);
        }
        uint256 windowEnd = uint256(st.closedAt) + _settlementWindow;
        if (block.timestamp < windowEnd) revert LeaseEscrow_SettlementWindowOpen(leaseId, uint64(windowEnd));
        if (_claims[leaseId].readyAt != 0) revert LeaseEscrow_ClaimPending(leaseId);
        LeaseHead memory head = lease.head;
        OfferTerms memory o = _offers[head.offerId];
        address provider = o.provider;
        // paid = price * settled <= deposit (see _pay).
        uint256 refund = uint256(st.deposit) - uint256(o.pricePerGpuSecond) * st.settledGpuSeconds;
        uint256 collateral = _collateral(leaseId, st.deposit);
        // The lease's fees (withheld from the provider at each settlement) become withdrawable now, once.
        uint256 fees = _feeCum(st.settledGpuSeconds, o.pricePerGpuSecond, st.feeBps);
        if (fees != 0) _globals.accruedFees += uint128(fees);
        lease.state.status = LeaseStatus.Finalized;
        OfferSlot storage slot = _offerSlots[_offerHashes[head.offerId]];
        unchecked {
            // The lease's gpus were added to gpusInUse at open and are removed exactly once, here.
            slot.gpusInUse -= head.gpus;
        }
        emit LeaseFinalized(leaseId, provider, head.consumer, refund, collateral);
        if (collateral != 0) _staking.unlockCollateral(provider, collateral);
        if (refund != 0) _token.safeTransfer(head.consumer, refund);
    }

    /*//////////////////////////////////////////////////////////////
                            SILENT PARTIES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function claim(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external {
        if (cp.leaseId != leaseId) revert LeaseEscrow_CheckpointLeaseMismatch(leaseId, cp.leaseId);
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        LeaseState memory st = lease.state;
        if (st.status == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        if (o.provider != msg.sender) revert LeaseEscrow_NotProvider(leaseId, msg.sender);
        _checkSettleable(leaseId, st);
        if (_claims[leaseId].readyAt != 0) revert LeaseEscrow_ClaimPending(leaseId);
        _checkUsage(leaseId, head, st, o, cp.seq, cp.cumulativeGpuSeconds);
        if (cp.cumulativeGpuSeconds == st.settledGpuSeconds) revert LeaseEscrow_NothingToClaim(leaseId);
        _verify(_hashCheckpoint(cp), providerSig, o.provider);
        uint64 readyAt = uint64(block.timestamp) + _disputeWindow;
        _claims[leaseId] = ClaimData(cp.seq, cp.cumulativeGpuSeconds, readyAt);
        emit UsageClaimed(leaseId, o.provider, head.consumer, cp.seq, cp.cumulativeGpuSeconds, readyAt);
    }

    /// @inheritdoc ILeaseEscrow
    function dispute(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external {
        if (cp.leaseId != leaseId) revert LeaseEscrow_CheckpointLeaseMismatch(leaseId, cp.leaseId);
        LeaseHead memory head = _leases[leaseId].head;
        address consumer = head.consumer;
        if (consumer != msg.sender) revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
        ClaimData memory c = _claims[leaseId];
        if (c.readyAt == 0) revert LeaseEscrow_NoClaim(leaseId);
        if (block.timestamp >= c.readyAt) revert LeaseEscrow_DisputeWindowClosed(leaseId, c.readyAt);
        if (cp.seq < c.seq || cp.cumulativeGpuSeconds >= c.cumulativeGpuSeconds) {
            revert LeaseEscrow_InvalidEvidence(leaseId);
        }
        address provider = _offers[head.offerId].provider;
        _verify(_hashCheckpoint(cp), providerSig, provider);
        delete _claims[leaseId];
        emit ClaimDisputed(leaseId, provider, consumer, c.seq, cp.seq);
    }

    /// @inheritdoc ILeaseEscrow
    function finalizeClaim(uint256 leaseId) external {
        ClaimData memory c = _claims[leaseId];
        if (c.readyAt == 0) revert LeaseEscrow_NoClaim(leaseId);
        if (block.timestamp < c.readyAt) revert LeaseEscrow_DisputeWindowOpen(leaseId, c.readyAt);
        delete _claims[leaseId];
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        address consumer = head.consumer;
        LeaseState memory st = lease.state;
        OfferTerms memory o = _offers[head.offerId];
        uint256 net;
        uint256 fee;
        // A settlement after the claim (higher seq, or more usage) makes it moot. The claim's usage was checked
        // against elapsed time when it was made; the lease cannot be finalized while a claim is pending.
        if (c.seq > st.lastSeq && c.cumulativeGpuSeconds >= st.settledGpuSeconds) {
            (net, fee) = _pay(lease, st, o.pricePerGpuSecond, c.seq, c.cumulativeGpuSeconds);
            if (net != 0) _addEarnings(o.provider, net);
            emit LeaseSettled(leaseId, o.provider, consumer, c.seq, c.cumulativeGpuSeconds, net + fee, fee);
        }
        emit ClaimFinalized(leaseId, o.provider, consumer, c.seq, c.cumulativeGpuSeconds, net + fee, fee);
    }

    /// @inheritdoc ILeaseEscrow
    function challengeLiveness(uint256 leaseId) external {
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        if (head.consumer != msg.sender) revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
        LeaseState memory st = lease.state;
        if (st.status != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        if (st.closedAt != 0) revert LeaseEscrow_ChallengePending(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        uint256 endsAt = _endsAt(head, o, st.deposit);
        if (block.timestamp >= endsAt) revert LeaseEscrow_LeaseEnded(leaseId, uint64(endsAt));
        uint32 deadline = uint32(block.timestamp + _livenessWindow);
        lease.state.closedAt = deadline;
        emit LivenessChallenged(leaseId, o.provider, msg.sender, deadline);
    }

    /// @inheritdoc ILeaseEscrow
    function answerLiveness(uint256 leaseId) external {
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        LeaseHead memory head = lease.head;
        address provider = _offers[head.offerId].provider;
        if (provider != msg.sender) revert LeaseEscrow_NotProvider(leaseId, msg.sender);
        if (st.status != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        if (st.closedAt == 0) revert LeaseEscrow_NoChallenge(leaseId);
        if (block.timestamp >= st.closedAt) revert LeaseEscrow_LivenessWindowClosed(leaseId, st.closedAt);
        lease.state.closedAt = 0;
        emit LivenessAnswered(leaseId, provider, head.consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function resolveLiveness(uint256 leaseId) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        if (st.status != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        if (st.closedAt == 0) revert LeaseEscrow_NoChallenge(leaseId);
        if (block.timestamp < st.closedAt) revert LeaseEscrow_LivenessWindowOpen(leaseId, st.closedAt);
        LeaseHead memory head = lease.head;
        address consumer = head.consumer;
        address provider = _offers[head.offerId].provider;
        uint256 slashAmount = _collateral(leaseId, st.deposit) * _livenessSlashBps / _BPS;
        if (slashAmount != 0) _slashed[leaseId] += slashAmount;
        _close(lease, leaseId, provider, consumer);
        emit LivenessResolved(leaseId, provider, consumer, slashAmount);
        if (slashAmount != 0) _staking.slash(provider, slashAmount, consumer, consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function reportEquivocation(
        uint256 leaseId,
        UsageCheckpoint calldata cpA,
        bytes calldata sigA,
        UsageCheckpoint calldata cpB,
        bytes calldata sigB
    ) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        if (st.status == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
        if (st.status == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
        address provider = _offers[lease.head.offerId].provider;
        _checkEquivocation(leaseId, provider, cpA, sigA, cpB, sigB);
        uint256 slashAmount = _collateral(leaseId, st.deposit);
        if (slashAmount == 0) revert LeaseEscrow_NothingToSlash(leaseId);
        _slashed[leaseId] += slashAmount;
        address consumer = lease.head.consumer;
        if (st.status == LeaseStatus.Open) _close(lease, leaseId, provider, consumer);
        emit EquivocationReported(leaseId, provider, consumer, msg.sender, cpA.seq, slashAmount);
        _staking.slash(provider, slashAmount, consumer, msg.sender);
    }

    /*//////////////////////////////////////////////////////////////
                        PROVIDERS, FEES, ADMIN
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function cancelOffersBelow(uint256 nonce) external {
        uint256 current = _minNonces[msg.sender];
        if (nonce <= current) revert LeaseEscrow_NonceNotIncreasing(nonce, current);
        _minNonces[msg.sender] = nonce;
        emit OffersCancelled(msg.sender, nonce);
    }

    /// @inheritdoc ILeaseEscrow
    function withdrawEarnings() external nonReentrant returns (uint256 amount) {
        uint256 stored = _earnings[msg.sender];
        if (stored <= 1) revert LeaseEscrow_NothingToWithdraw();
        unchecked {
            amount = stored - 1;
        }
        // Keeps the slot non-zero for the next credit.
        _earnings[msg.sender] = 1;
        emit EarningsWithdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc ILeaseEscrow
    function withdrawFees(address to) external nonReentrant returns (uint256 amount) {
        if (msg.sender != _treasury) revert LeaseEscrow_NotTreasury(msg.sender);
        if (to == address(0)) revert LeaseEscrow_ZeroAddress();
        amount = _globals.accruedFees;
        if (amount == 0) revert LeaseEscrow_NothingToWithdraw();
        _globals.accruedFees = 0;
        emit FeesWithdrawn(to, amount);
        _token.safeTransfer(to, amount);
    }

    /// @inheritdoc ILeaseEscrow
    function setFee(uint16 newFeeBps) external onlyOwner {
        if (newFeeBps > MAX_FEE_BPS) revert LeaseEscrow_FeeTooHigh(newFeeBps);
        uint16 old = _globals.feeBps;
        _globals.feeBps = newFeeBps;
        emit FeeUpdated(old, newFeeBps);
    }

    /// @inheritdoc ILeaseEscrow
    function setTreasury(address newTreasury) external onlyOwner {
        if (newTreasury == address(0)) revert LeaseEscrow_ZeroAddress();
        address old = _treasury;
        _treasury = newTreasury;
        emit TreasuryUpdated(old, newTreasury);
    }

    /*//////////////////////////////////////////////////////////////
                                VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function getLease(uint256 leaseId) external view returns (Lease memory lease) {
        LeaseData memory l = _leases[leaseId];
        if (l.state.status == LeaseStatus.None) return lease;
        OfferTerms memory o = _offers[l.head.offerId];
        lease.consumer = l.head.consumer;
        lease.provider = o.provider;
        lease.offerHash = _offerHashes[l.head.offerId];
        lease.gpus = l.head.gpus;
        lease.status = l.state.status;
        lease.pricePerGpuSecond = o.pricePerGpuSecond;
        lease.deposit = l.state.deposit;
        lease.paid = uint256(o.pricePerGpuSecond) * l.state.settledGpuSeconds;
        lease.settledGpuSeconds = l.state.settledGpuSeconds;
        lease.lastSeq = l.state.lastSeq;
        lease.startedAt = l.head.startedAt;
        lease.endsAt = uint64(_endsAt(l.head, o, l.state.deposit));
        lease.maxEndsAt = uint64(_maxEndsAt(l.head, o));
        if (l.state.status == LeaseStatus.Open) lease.livenessDeadline = l.state.closedAt;
        else lease.closedAt = l.state.closedAt;
        if (l.state.status != LeaseStatus.Finalized) lease.collateral = _collateral(leaseId, l.state.deposit);
    }

    /// @inheritdoc ILeaseEscrow
    function getClaim(uint256 leaseId) external view returns (Claim memory) {
        ClaimData memory c = _claims[leaseId];
        return Claim(c.seq, c.cumulativeGpuSeconds, c.readyAt);
    }

    /// @inheritdoc ILeaseEscrow
    function leaseCount() external view returns (uint256) {
        return _globals.leaseCount;
    }

    /// @inheritdoc ILeaseEscrow
    function offerGpusInUse(bytes32 offerHash) external view returns (uint32) {
        return _offerSlots[offerHash].gpusInUse;
    }

    /// @inheritdoc ILeaseEscrow
    function hashOffer(Offer calldata offer) external pure returns (bytes32) {
        return _hashOffer(offer);
    }

    /// @inheritdoc ILeaseEscrow
    function hashCheckpoint(UsageCheckpoint calldata cp) external pure returns (bytes32) {
        return _hashCheckpoint(cp);
    }

    /// @inheritdoc ILeaseEscrow
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc ILeaseEscrow
    function minNonce(address provider) external view returns (uint256) {
        return _minNonces[provider];
    }

    /// @inheritdoc ILeaseEscrow
    function earnings(address provider) external view returns (uint256) {
        uint256 stored = _earnings[provider];
        return stored == 0 ? 0 : stored - 1;
    }

    /// @inheritdoc ILeaseEscrow
    function accruedFees() external view returns (uint256) {
        return _globals.accruedFees;
    }

    /// @inheritdoc ILeaseEscrow
    function feeBps() external view returns (uint16) {
        return _globals.feeBps;
    }

    /// @inheritdoc ILeaseEscrow
    function treasury() external view returns (address) {
        return _treasury;
    }

    /// @inheritdoc ILeaseEscrow
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc ILeaseEscrow
    function staking() external view returns (IProviderStaking) {
        return _staking;
    }

    /// @inheritdoc ILeaseEscrow
    function collateralBps() external view returns (uint16) {
        return _collateralBps;
    }

    /// @inheritdoc ILeaseEscrow
    function livenessSlashBps() external view returns (uint16) {
        return _livenessSlashBps;
    }

    /// @inheritdoc ILeaseEscrow
    function settlementWindow() external view returns (uint32) {
        return _settlementWindow;
    }

    /// @inheritdoc ILeaseEscrow
    function disputeWindow() external view returns (uint32) {
        return _disputeWindow;
    }

    /// @inheritdoc ILeaseEscrow
    function livenessWindow() external view returns (uint32) {
        return _livenessWindow;
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _open(Offer calldata offer, bytes calldata providerSig, uint32 gpus, uint256 deposit)
        private
        returns (uint256 leaseId)
    {
        (bytes32 offerHash, OfferSlot memory slot, uint256 endsAt) = _checkOpen(offer, providerSig, gpus, deposit);
        leaseId = _storeLease(offer, offerHash, slot, gpus, deposit);
        _emitOpened(leaseId, offer, offerHash, gpus, deposit, endsAt);
        // Reverts unless the provider is registered with enough free stake.
        _staking.lockCollateral(offer.provider, deposit * _collateralBps / _BPS);
        _token.safeTransferFrom(msg.sender, address(this), deposit);
    }

    /// @dev Writes the globals, the offer (terms at its first lease) and the new lease; returns its id.
    function _storeLease(
        Offer calldata offer,
        bytes32 offerHash,
        OfferSlot memory slot,
        uint32 gpus,
        uint256 deposit
    ) private returns (uint256 leaseId) {
        // The packed slots below are written with one SSTORE each; see the struct layouts (first member lowest).
        uint256 g;
        assembly ("memory-safe") {
            g := sload(_globals.slot)
        }
        uint256 offerId = slot.id;
        if (offerId == 0) {
            // First lease of this offer: its terms are fixed by the offer hash, store them once.
            // Checked: panics after 2^32 - 1 offers.
            offerId = uint32(g >> _OFFER_COUNT_SHIFT) + 1;
            g = (g & ~(uint256(type(uint32).max) << _OFFER_COUNT_SHIFT)) | (offerId << _OFFER_COUNT_SHIFT);
            uint256 maxDuration = offer.maxDuration;
            if (maxDuration > type(uint32).max) maxDuration = type(uint32).max;
            uint256 termsWord =
                uint256(uint160(offer.provider)) | (offer.pricePerGpuSecond << 160) | (maxDuration << 224);
            OfferTerms storage terms = _offers[offerId];
            assembly ("memory-safe") {
                sstore(terms.slot, termsWord)
            }
            _offerHashes[offerId] = offerHash;
        }
        unchecked {
            // leaseCount < 2^64 - 1 in practice: one per transaction.
            leaseId = uint256(uint64(g >> _LEASE_COUNT_SHIFT)) + 1;
        }
        g = (g & ~(uint256(type(uint64).max) << _LEASE_COUNT_SHIFT)) | (leaseId << _LEASE_COUNT_SHIFT);
        // gpusInUse + gpus <= gpuCount < 2^32 (checked in _checkOpen).
        uint256 slotWord = offerId | ((uint256(slot.gpusInUse) + gpus) << 32);
        uint256 headWord = uint256(uint160(msg.sender)) | (offerId << 160) | (uint256(gpus) << 192)
            | (block.timestamp << 224);
        // The lease keeps the current fee rate for its whole life.
        uint256 stateWord = deposit | (uint256(uint16(g >> _FEE_BPS_SHIFT)) << 200)
            | (uint256(uint8(LeaseStatus.Open)) << 216);
        LeaseData storage lease = _leases[leaseId];
        OfferSlot storage offerSlot = _offerSlots[offerHash];
        assembly ("memory-safe") {
            sstore(_globals.slot, g)
            sstore(offerSlot.slot, slotWord)
            sstore(lease.slot, headWord)
            sstore(add(lease.slot, 1), stateWord)
        }
    }

    function _emitOpened(
        uint256 leaseId,
        Offer calldata offer,
        bytes32 offerHash,
        uint32 gpus,
        uint256 deposit,
        uint256 endsAt
    ) private {
        emit LeaseOpened(
            leaseId,
            offer.provider,
            msg.sender,
            offerHash,
            gpus,
            offer.pricePerGpuSecond,
            deposit,
            uint64(block.timestamp),
            uint64(endsAt)
        );
    }

    /// @dev All checks of `openLease` but the provider's stake; returns the offer hash, its slot and the lease's
    /// paid-through end.
    function _checkOpen(Offer calldata offer, bytes calldata providerSig, uint32 gpus, uint256 deposit)
        private
        view
        returns (bytes32 offerHash, OfferSlot memory slot, uint256 endsAt)
    {
        if (block.timestamp >= offer.expiresAt) revert LeaseEscrow_OfferExpired(offer.expiresAt);
        uint256 price = offer.pricePerGpuSecond;
        if (price == 0 || price > type(uint64).max || offer.minDuration == 0 || offer.minDuration > offer.maxDuration) {
            revert LeaseEscrow_InvalidOfferTerms();
        }
        if (gpus == 0) revert LeaseEscrow_ZeroGpus();
        {
            uint256 minNonce_ = _minNonces[offer.provider];
            if (offer.nonce < minNonce_) revert LeaseEscrow_OfferCancelled(offer.provider, offer.nonce, minNonce_);
        }
        offerHash = _hashOffer(offer);
        _verify(offerHash, providerSig, offer.provider);

        slot = _offerSlots[offerHash];
        uint256 inUse = slot.gpusInUse;
        // inUse <= gpuCount always holds for a signed offer (only _open adds to it, after this check).
        uint256 available = offer.gpuCount > inUse ? offer.gpuCount - inUse : 0;
        if (gpus > available) revert LeaseEscrow_InsufficientCapacity(offerHash, gpus, uint32(available));

        uint256 rate = price * gpus;
        uint256 minDeposit = rate * offer.minDuration;
        if (deposit < minDeposit) revert LeaseEscrow_DepositTooLow(deposit, minDeposit);
        uint256 maxEndsAt = block.timestamp + offer.maxDuration;
        if (maxEndsAt > type(uint32).max) maxEndsAt = type(uint32).max;
        uint256 maxDeposit = _maxDeposit(rate, maxEndsAt - block.timestamp);
        if (deposit > maxDeposit) revert LeaseEscrow_DepositTooHigh(deposit, maxDeposit);
        endsAt = block.timestamp + deposit / rate;
        if (endsAt > maxEndsAt) endsAt = maxEndsAt;
    }

    /// @dev Applies a validated checkpoint: writes the lease state, returns the provider's share and the fee
    /// (feeCum(cumulative) - feeCum(settled); it stays in the escrow and is accrued at finalization).
    function _pay(LeaseData storage lease, LeaseState memory st, uint256 price, uint64 seq, uint64 cumulative)
        private
        returns (uint256 net, uint256 fee)
    {
        uint256 amount;
        unchecked {
            // cumulative >= settled was checked, and usage is capped by paid-through elapsed time
            // (gpus * (endsAt - startedAt) <= deposit / price), so paid = price * cumulative <= deposit.
            amount = price * (cumulative - st.settledGpuSeconds);
            // feeCum is monotonic, and feeCum(new) - feeCum(old) <= ceil(amount * feeBps / 10_000) <= amount
            // since feeBps <= MAX_FEE_BPS < 10_000.
            fee = _feeCum(cumulative, price, st.feeBps) - _feeCum(st.settledGpuSeconds, price, st.feeBps);
            net = amount - fee;
        }
        // One SSTORE of the whole LeaseState slot: deposit, settled, lastSeq, feeBps, status, closedAt.
        uint256 word = uint256(st.deposit) | (uint256(cumulative) << 96) | (uint256(uint40(seq)) << 160)
            | (uint256(st.feeBps) << 200) | (uint256(uint8(st.status)) << 216) | (uint256(st.closedAt) << 224);
        LeaseState storage state = lease.state;
        assembly ("memory-safe") {
            sstore(state.slot, word)
        }
    }

    /// @dev `settle` (sent by the consumer) and `settleWithConsent` (sent by the provider; the caller checks the
    /// consumer's signature). Returns the lease's consumer.
    function _settleOne(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig, bool byProvider)
        private
        returns (address consumer)
    {
        if (cp.leaseId != leaseId) revert LeaseEscrow_CheckpointLeaseMismatch(leaseId, cp.leaseId);
        LeaseData storage lease = _leases[leaseId];
        LeaseState memory st = lease.state;
        OfferTerms memory o;
        {
            LeaseHead memory head = lease.head;
            o = _offers[head.offerId];
            consumer = head.consumer;
            if (byProvider) {
                if (st.status == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
                if (o.provider != msg.sender) revert LeaseEscrow_NotProvider(leaseId, msg.sender);
            } else if (consumer != msg.sender) {
                revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
            }
            _checkSettleable(leaseId, st);
            _checkUsage(leaseId, head, st, o, cp.seq, cp.cumulativeGpuSeconds);
        }
        _verify(_hashCheckpoint(cp), providerSig, o.provider);
        (uint256 net, uint256 fee) = _pay(lease, st, o.pricePerGpuSecond, cp.seq, cp.cumulativeGpuSeconds);
        if (net != 0) _addEarnings(o.provider, net);
        emit LeaseSettled(leaseId, o.provider, consumer, cp.seq, cp.cumulativeGpuSeconds, net + fee, fee);
    }

    /// @dev One `settleBatch` entry: validates and applies it, or reports a lost race and returns provider 0.
    function _settleItem(SettleItem calldata item) private returns (address provider, uint256 net) {
        UsageCheckpoint calldata cp = item.checkpoint;
        LeaseData storage lease = _leases[cp.leaseId];
        LeaseState memory st = lease.state;
        {
            LeaseHead memory head = lease.head;
            if (head.consumer != msg.sender) revert LeaseEscrow_NotConsumer(cp.leaseId, msg.sender);
            if (cp.seq <= st.lastSeq || !_withinSettlement(st)) {
                // Lost a race: a newer checkpoint was settled, or the lease was (or can be) finalized.
                emit SettlementSkipped(cp.leaseId, msg.sender, cp.seq, st.lastSeq);
                return (address(0), 0);
            }
            OfferTerms memory o = _offers[head.offerId];
            provider = o.provider;
            _checkUsage(cp.leaseId, head, st, o, cp.seq, cp.cumulativeGpuSeconds);
            _verify(_hashCheckpoint(cp), item.providerSig, provider);
            uint256 fee;
            (net, fee) = _pay(lease, st, o.pricePerGpuSecond, cp.seq, cp.cumulativeGpuSeconds);
            emit LeaseSettled(cp.leaseId, provider, msg.sender, cp.seq, cp.cumulativeGpuSeconds, net + fee, fee);
        }
    }

    /// @dev Reverts unless the two checkpoints are distinct provider-signed checkpoints of `leaseId` with one seq.
    function _checkEquivocation(
        uint256 leaseId,
        address provider,
        UsageCheckpoint calldata cpA,
        bytes calldata sigA,
        UsageCheckpoint calldata cpB,
        bytes calldata sigB
    ) private view {
        bytes32 hashA = _hashCheckpoint(cpA);
        bytes32 hashB = _hashCheckpoint(cpB);
        if (cpA.leaseId != leaseId || cpB.leaseId != leaseId || cpA.seq != cpB.seq || hashA == hashB) {
            revert LeaseEscrow_NotEquivocation(leaseId);
        }
        _verify(hashA, sigA, provider);
        _verify(hashB, sigB, provider);
    }

    /// @dev Reverts if `newDeposit` exceeds price * gpus * maxDuration; emits `LeaseToppedUp`.
    function _emitToppedUp(
        uint256 leaseId,
        LeaseHead memory head,
        OfferTerms memory o,
        uint256 amount,
        uint256 newDeposit
    ) private {
        uint256 rate = uint256(o.pricePerGpuSecond) * head.gpus;
        uint256 maxDeposit = _maxDeposit(rate, _maxEndsAt(head, o) - head.startedAt);
        if (newDeposit > maxDeposit) revert LeaseEscrow_DepositTooHigh(newDeposit, maxDeposit);
        emit LeaseToppedUp(
            leaseId,
            o.provider,
            head.consumer,
            msg.sender,
            amount,
            newDeposit,
            uint64(_endsAt(head, o, newDeposit)),
            _collateral(leaseId, newDeposit)
        );
    }

    /// @dev Fees of a lease that settled `usage` GPU-seconds: floor(usage * price * feeBps / 10_000).
    /// usage < 2^64, price < 2^64 and feeBps < 2^16, so the product cannot overflow.
    function _feeCum(uint256 usage, uint256 price, uint256 feeBps_) private pure returns (uint256) {
        unchecked {
            return usage * price * feeBps_ / _BPS;
        }
    }

    /// @dev The earnings slot holds earnings + 1 once credited (see the storage notes).
    function _addEarnings(address provider, uint256 net) private {
        uint256 stored = _earnings[provider];
        _earnings[provider] = (stored == 0 ? 1 : stored) + net;
    }

    function _close(LeaseData storage lease, uint256 leaseId, address provider, address consumer) private {
        lease.state.status = LeaseStatus.Closed;
        lease.state.closedAt = uint32(block.timestamp);
        emit LeaseClosed(leaseId, provider, consumer, msg.sender, uint64(block.timestamp));
    }

    /// @dev Reverts unless the lease takes settlements (open, or closed within the settlement window).
    function _checkSettleable(uint256 leaseId, LeaseState memory st) private view {
        if (st.status == LeaseStatus.Open) return;
        if (st.status == LeaseStatus.Closed) {
            uint256 windowEnd = uint256(st.closedAt) + _settlementWindow;
            if (block.timestamp >= windowEnd) revert LeaseEscrow_SettlementWindowClosed(leaseId, uint64(windowEnd));
            return;
        }
        if (st.status == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
        revert LeaseEscrow_LeaseNotFound(leaseId);
    }

    function _withinSettlement(LeaseState memory st) private view returns (bool) {
        return st.status == LeaseStatus.Open
            || (st.status == LeaseStatus.Closed && block.timestamp < uint256(st.closedAt) + _settlementWindow);
    }

    /// @dev Reverts unless `seq` is new and `cumulative` is monotonic and within gpus * elapsed paid-through time.
    function _checkUsage(
        uint256 leaseId,
        LeaseHead memory head,
        LeaseState memory st,
        OfferTerms memory o,
        uint64 seq,
        uint64 cumulative
    ) private view {
        if (seq <= st.lastSeq || seq > _MAX_SEQ) revert LeaseEscrow_StaleSeq(leaseId, seq, st.lastSeq);
        if (cumulative < st.settledGpuSeconds) {
            revert LeaseEscrow_UsageDecreased(leaseId, cumulative, st.settledGpuSeconds);
        }
        uint256 end = _endsAt(head, o, st.deposit);
        if (st.status == LeaseStatus.Closed && st.closedAt < end) end = st.closedAt;
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
        private
        pure
        returns (uint256 endsAt)
    {
        endsAt = uint256(head.startedAt) + deposit / (uint256(o.pricePerGpuSecond) * head.gpus);
        uint256 maxEndsAt = _maxEndsAt(head, o);
        if (endsAt > maxEndsAt) endsAt = maxEndsAt;
    }

    /// @dev startedAt + the offer's maxDuration, capped at 2^32 - 1.
    function _maxEndsAt(LeaseHead memory head, OfferTerms memory o) private pure returns (uint256 maxEndsAt) {
        maxEndsAt = uint256(head.startedAt) + o.maxDuration;
        if (maxEndsAt > type(uint32).max) maxEndsAt = type(uint32).max;
    }

    function _maxDeposit(uint256 rate, uint256 maxDuration) private pure returns (uint256 maxDeposit) {
        maxDeposit = rate * maxDuration;
        if (maxDeposit > type(uint96).max) maxDeposit = type(uint96).max;
    }

    /// @dev Collateral still locked for a lease: deposit * collateralBps / 10_000 minus what was slashed.
    function _collateral(uint256 leaseId, uint256 deposit) private view returns (uint256) {
        return deposit * _collateralBps / _BPS - _slashed[leaseId];
    }

    function _verify(bytes32 structHash, bytes calldata sig, address signer) private view {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), sig);
        if (err != ECDSA.RecoverError.NoError || recovered != signer) revert LeaseEscrow_InvalidSignature(signer);
    }

    function _hashOffer(Offer calldata offer) private pure returns (bytes32) {
        return keccak256(abi.encode(_OFFER_TYPEHASH, offer));
    }

    function _hashCheckpoint(UsageCheckpoint calldata cp) private pure returns (bytes32) {
        return keccak256(abi.encode(_CHECKPOINT_TYPEHASH, cp));
    }
}
