// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ILeaseEscrow} from "./interfaces/ILeaseEscrow.sol";
import {IProviderStaking} from "./interfaces/IProviderStaking.sol";
import {LeaseState, LeaseStateLibrary} from "./types/LeaseState.sol";
import {LeaseEscrowBase} from "./escrow/LeaseEscrowBase.sol";
import {LeaseFaults} from "./escrow/LeaseFaults.sol";
import {TokenTransfers} from "./libraries/TokenTransfers.sol";

/// @title LeaseEscrow
/// @notice Escrow of gpunet GPU leases. See ILeaseEscrow and docs/spec.md.
/// @dev Leases and money: open, top up, settle, close, finalize, withdraw, admin and views. Storage and the rules
/// shared with the fault paths live in `LeaseEscrowBase` (its notes describe the storage layout); a silent party's
/// paths (claims, liveness challenges) and equivocation reports live in `LeaseFaults`.
contract LeaseEscrow is LeaseFaults {
    using SafeERC20 for IERC20;
    using TokenTransfers for IERC20;

    /// @inheritdoc ILeaseEscrow
    uint256 public constant MAX_BATCH_SIZE = 256;

    /// @dev Bit offsets of `Globals.leaseCount`, `Globals.feeBps` and `Globals.offerCount` in the globals slot.
    uint256 private constant _LEASE_COUNT_SHIFT = 128;
    uint256 private constant _FEE_BPS_SHIFT = 192;
    uint256 private constant _OFFER_COUNT_SHIFT = 208;
    /// @dev Bit offsets of the other packed words `_storeLease` writes whole (see the structs in LeaseEscrowBase).
    uint256 private constant _HEAD_OFFER_ID_SHIFT = 160;
    uint256 private constant _HEAD_GPUS_SHIFT = 192;
    uint256 private constant _HEAD_STARTED_AT_SHIFT = 224;
    uint256 private constant _TERMS_PRICE_SHIFT = 160;
    uint256 private constant _TERMS_MAX_DURATION_SHIFT = 224;
    uint256 private constant _SLOT_GPUS_IN_USE_SHIFT = 32;

    /// @param token_ Payment token (ERC-20; `openLeaseWithPermit` needs ERC-2612).
    /// @param staking_ The provider staking contract (its escrow must be set to this contract).
    /// @param owner_ Admin of the fee and the treasury.
    /// @param config Fee, collateral and slash basis points, windows in seconds, treasury.
    constructor(IERC20 token_, IProviderStaking staking_, address owner_, Config memory config)
        LeaseEscrowBase(token_, staking_, owner_, config)
    {}

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
        LeaseState st = lease.state;
        if (st.status() != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        // The liveness slash is taken on the deposit at the challenge: no top-up while one is pending or missed.
        if (st.livenessDeadline() != 0) revert LeaseEscrow_ChallengePending(leaseId);
        LeaseHead memory head = lease.head;
        OfferTerms memory o = _offers[head.offerId];
        uint256 oldDeposit = st.deposit();
        uint256 newDeposit = oldDeposit + amount;
        // The equivocation slash is capped by the collateral of the opening deposit (see _equivocationSlash).
        if (_depositsAtOpen[leaseId] == 0) _depositsAtOpen[leaseId] = oldDeposit;
        uint256 extraCollateral = newDeposit * _collateralBps / _BPS - oldDeposit * _collateralBps / _BPS;
        // newDeposit < 2^96: _emitToppedUp reverts above maxDeposit, which is capped at 2^96 - 1.
        lease.state = st.setDeposit(uint96(newDeposit));
        _emitToppedUp(leaseId, head, o, amount, newDeposit);
        if (extraCollateral != 0) _staking.lockCollateral(o.provider, extraCollateral);
        _pullExact(amount);
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
    function closeLease(uint256 leaseId) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        LeaseState st = lease.state;
        if (st.status() != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        if (msg.sender != head.consumer) {
            if (msg.sender != o.provider) revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
            uint256 endsAt = _endsAt(head, o, st.deposit());
            if (block.timestamp < endsAt) revert LeaseEscrow_LeaseNotEnded(leaseId, uint64(endsAt));
        }
        // Closing resolves a missed liveness deadline (see _close).
        uint256 livenessSlash = _close(lease, st, leaseId, o.provider, head.consumer);
        if (livenessSlash != 0) _staking.slash(o.provider, livenessSlash, head.consumer, head.consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function finalizeLease(uint256 leaseId) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState st = lease.state;
        LeaseStatus status = st.status();
        if (status != LeaseStatus.Closed) {
            if (status == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
            if (status == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
            revert LeaseEscrow_LeaseNotClosed(leaseId);
        }
        uint256 windowEnd = uint256(st.closedAt()) + _settlementWindow;
        if (block.timestamp < windowEnd) revert LeaseEscrow_SettlementWindowOpen(leaseId, uint64(windowEnd));
        if (_claims[leaseId].readyAt != 0) revert LeaseEscrow_ClaimPending(leaseId);
        LeaseHead memory head = lease.head;
        OfferTerms memory o = _offers[head.offerId];
        address provider = o.provider;
        // paid = price * settled <= deposit (see _pay).
        uint256 refund = uint256(st.deposit()) - uint256(o.pricePerGpuSecond) * st.settledGpuSeconds();
        uint256 collateral = _collateral(leaseId, st.deposit());
        // The lease's fees (withheld from the provider at each settlement) become withdrawable now, once.
        uint256 fees = _feeCum(st.settledGpuSeconds(), o.pricePerGpuSecond, st.feeBps());
        if (fees != 0) _globals.accruedFees += uint128(fees);
        lease.state = st.setStatus(LeaseStatus.Finalized);
        OfferSlot storage slot = _offerSlots[_offerHashes[head.offerId]];
        unchecked {
            // The lease's gpus were added to gpusInUse at open and are removed exactly once, here.
            slot.gpusInUse -= head.gpus;
        }
        emit LeaseFinalized(leaseId, provider, head.consumer, refund, collateral);
        if (collateral != 0) _staking.unlockCollateral(provider, collateral);
        // No recipient can block finalization: a refund whose transfer fails is credited for `withdrawRefund`.
        // The credit is the only write after an external call; the guard keeps this function from being re-entered,
        // and everything the call could observe is already final.
        if (refund != 0 && !_token.tryPush(head.consumer, refund)) {
            _refunds[head.consumer] += refund;
            emit RefundCredited(leaseId, head.consumer, refund);
        }
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
    function withdrawRefund() external nonReentrant returns (uint256 amount) {
        amount = _refunds[msg.sender];
        if (amount == 0) revert LeaseEscrow_NothingToWithdraw();
        _refunds[msg.sender] = 0;
        emit RefundWithdrawn(msg.sender, amount);
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
        LeaseState st = l.state;
        LeaseStatus status = st.status();
        if (status == LeaseStatus.None) return lease;
        OfferTerms memory o = _offers[l.head.offerId];
        lease.consumer = l.head.consumer;
        lease.provider = o.provider;
        lease.offerHash = _offerHashes[l.head.offerId];
        lease.gpus = l.head.gpus;
        lease.status = status;
        lease.pricePerGpuSecond = o.pricePerGpuSecond;
        lease.deposit = st.deposit();
        lease.paid = uint256(o.pricePerGpuSecond) * st.settledGpuSeconds();
        lease.settledGpuSeconds = st.settledGpuSeconds();
        lease.lastSeq = st.lastSeq();
        lease.startedAt = l.head.startedAt;
        lease.endsAt = uint64(_endsAt(l.head, o, st.deposit()));
        lease.maxEndsAt = uint64(_maxEndsAt(l.head, o));
        if (status == LeaseStatus.Open) lease.livenessDeadline = st.livenessDeadline();
        else lease.closedAt = st.closedAt();
        if (status != LeaseStatus.Finalized) lease.collateral = _collateral(leaseId, st.deposit());
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
    function refunds(address consumer) external view returns (uint256) {
        return _refunds[consumer];
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
        _pullExact(deposit);
    }

    /// @dev Pulls `amount` from the caller; reverts unless exactly `amount` arrived (fee-on-transfer and similar
    /// tokens are refused: the escrow credits only what it holds).
    function _pullExact(uint256 amount) private {
        uint256 received = _token.pull(msg.sender, amount);
        if (received != amount) revert LeaseEscrow_AmountNotReceived(amount, received);
    }

    /// @dev Writes the globals, the offer (terms at its first lease) and the new lease; returns its id.
    function _storeLease(Offer calldata offer, bytes32 offerHash, OfferSlot memory slot, uint32 gpus, uint256 deposit)
        private
        returns (uint256 leaseId)
    {
        // The packed slots below are written with one SSTORE each; see the struct layouts (first member lowest) and
        // types/LeaseState.sol.
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
            uint256 termsWord = uint256(uint160(offer.provider)) | (offer.pricePerGpuSecond << _TERMS_PRICE_SHIFT)
                | (maxDuration << _TERMS_MAX_DURATION_SHIFT);
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
        uint256 slotWord = offerId | ((uint256(slot.gpusInUse) + gpus) << _SLOT_GPUS_IN_USE_SHIFT);
        uint256 headWord = uint256(uint160(msg.sender)) | (offerId << _HEAD_OFFER_ID_SHIFT)
            | (uint256(gpus) << _HEAD_GPUS_SHIFT) | (block.timestamp << _HEAD_STARTED_AT_SHIFT);
        // The lease keeps the current fee rate for its whole life. deposit < 2^96 (checked in _checkOpen).
        LeaseState state = LeaseStateLibrary.opened(uint96(deposit), uint16(g >> _FEE_BPS_SHIFT));
        LeaseData storage lease = _leases[leaseId];
        OfferSlot storage offerSlot = _offerSlots[offerHash];
        assembly ("memory-safe") {
            sstore(_globals.slot, g)
            sstore(offerSlot.slot, slotWord)
            sstore(lease.slot, headWord)
            sstore(add(lease.slot, 1), state)
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

    /// @dev `settle` (sent by the consumer) and `settleWithConsent` (sent by the provider; the caller checks the
    /// consumer's signature). Returns the lease's consumer.
    function _settleOne(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig, bool byProvider)
        private
        returns (address consumer)
    {
        if (cp.leaseId != leaseId) revert LeaseEscrow_CheckpointLeaseMismatch(leaseId, cp.leaseId);
        LeaseData storage lease = _leases[leaseId];
        LeaseState st = lease.state;
        OfferTerms memory o;
        {
            LeaseHead memory head = lease.head;
            o = _offers[head.offerId];
            consumer = head.consumer;
            if (byProvider) {
                if (st.status() == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
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
        LeaseState st = lease.state;
        {
            LeaseHead memory head = lease.head;
            if (head.consumer != msg.sender) revert LeaseEscrow_NotConsumer(cp.leaseId, msg.sender);
            if (cp.seq <= st.lastSeq() || !_withinSettlement(st)) {
                // Lost a race: a newer checkpoint was settled, or the lease was (or can be) finalized.
                emit SettlementSkipped(cp.leaseId, msg.sender, cp.seq, st.lastSeq());
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

    /// @dev Whether the lease takes settlements (the non-reverting form of `_checkSettleable`).
    function _withinSettlement(LeaseState st) private view returns (bool) {
        LeaseStatus status = st.status();
        return status == LeaseStatus.Open
            || (status == LeaseStatus.Closed && block.timestamp < uint256(st.closedAt()) + _settlementWindow);
    }

    function _maxDeposit(uint256 rate, uint256 maxDuration) private pure returns (uint256 maxDeposit) {
        maxDeposit = rate * maxDuration;
        if (maxDeposit > type(uint96).max) maxDeposit = type(uint96).max;
    }
}
