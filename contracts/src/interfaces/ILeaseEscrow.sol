// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IProviderStaking} from "./IProviderStaking.sol";

/// @title ILeaseEscrow
/// @notice Escrow of gpunet leases. A consumer opens a lease against a provider-signed EIP-712 `Offer` and
/// deposits tokens; usage is paid from the deposit against provider-signed EIP-712 `UsageCheckpoint`s (pull
/// payments to the provider's internal balance, a capped protocol fee to the treasury, withdrawable once the lease
/// is finalized); the rest is refunded to the consumer after the lease closes and the settlement window passes. See docs/spec.md for the byte formats.
interface ILeaseEscrow {
    /*//////////////////////////////////////////////////////////////
                                TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice A provider's signed offer (EIP-712 type `Offer`, docs/spec.md). Its struct hash is the offer id.
    struct Offer {
        address provider;
        uint256 nonce;
        bytes32 gpuModel;
        uint32 gpuCount;
        uint32 vramMiB;
        uint256 pricePerGpuSecond;
        uint64 minDuration;
        uint64 maxDuration;
        uint64 expiresAt;
        bytes32 specHash;
    }

    /// @notice A provider-signed usage checkpoint (EIP-712 type `UsageCheckpoint`, docs/spec.md).
    struct UsageCheckpoint {
        uint256 leaseId;
        uint64 seq;
        uint64 cumulativeGpuSeconds;
        bytes32 heartbeatHead;
        uint64 timestamp;
    }

    /// @notice One entry of `settleBatch`: a checkpoint (its `leaseId` names the lease) and the provider signature.
    struct SettleItem {
        UsageCheckpoint checkpoint;
        bytes providerSig;
    }

    /// @notice Lease states; a lease only moves forward: Open -> Closed -> Finalized.
    enum LeaseStatus {
        None,
        Open,
        Closed,
        Finalized
    }

    /// @notice Read-only view of a lease, as returned by `getLease`.
    /// @param paid Tokens paid out of the deposit so far (provider share + fee) = price * settledGpuSeconds.
    /// @param endsAt Paid-through end: startedAt + min(maxDuration, deposit / (price * gpus)).
    /// @param maxEndsAt startedAt + the offer's maxDuration (capped at 2^32 - 1).
    /// @param closedAt When the lease was closed (0 while open).
    /// @param livenessDeadline Deadline of an unanswered liveness challenge (0 if none; only while open).
    /// @param collateral Provider stake still locked for this lease: deposit * collateralBps / 10_000 minus slashes.
    struct Lease {
        address consumer;
        address provider;
        bytes32 offerHash;
        uint32 gpus;
        LeaseStatus status;
        uint256 pricePerGpuSecond;
        uint256 deposit;
        uint256 paid;
        uint64 settledGpuSeconds;
        uint64 lastSeq;
        uint64 startedAt;
        uint64 endsAt;
        uint64 maxEndsAt;
        uint64 closedAt;
        uint64 livenessDeadline;
        uint256 collateral;
    }

    /// @notice A provider's pending claim (silent consumer path); `readyAt` = 0 when there is none.
    struct Claim {
        uint64 seq;
        uint64 cumulativeGpuSeconds;
        uint64 readyAt;
    }

    /// @notice Constructor parameters (all windows in seconds).
    struct Config {
        address treasury;
        uint16 feeBps;
        uint16 collateralBps;
        uint16 livenessSlashBps;
        uint32 settlementWindow;
        uint32 disputeWindow;
        uint32 livenessWindow;
    }

    /*//////////////////////////////////////////////////////////////
                                EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Emitted when `consumer` opened lease `leaseId` on offer `offerHash` of `provider`.
    event LeaseOpened(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        bytes32 offerHash,
        uint32 gpus,
        uint256 pricePerGpuSecond,
        uint256 deposit,
        uint64 startedAt,
        uint64 endsAt
    );

    /// @notice Emitted when `payer` added `amount` to the deposit; `deposit`, `endsAt` and `collateral` afterwards.
    event LeaseToppedUp(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        address payer,
        uint256 amount,
        uint256 deposit,
        uint64 endsAt,
        uint256 collateral
    );

    /// @notice Emitted when checkpoint `seq` was settled: `amount` left the deposit, of which `amount - fee` went to
    /// the provider's earnings and `fee` is the protocol fee (feeCum(cumulative) - feeCum(previous), see `settle`),
    /// added to `accruedFees` when the lease is finalized.
    event LeaseSettled(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        uint64 seq,
        uint64 cumulativeGpuSeconds,
        uint256 amount,
        uint256 fee
    );

    /// @notice Emitted by `settleBatch` for an entry lost to a race (its seq was already settled, or the lease
    /// was finalized); the entry is skipped and the rest of the batch proceeds.
    event SettlementSkipped(uint256 indexed leaseId, address indexed consumer, uint64 seq, uint64 lastSeq);

    /// @notice Emitted when `closedBy` closed the lease at `closedAt`; usage stops accruing then.
    event LeaseClosed(
        uint256 indexed leaseId, address indexed provider, address indexed consumer, address closedBy, uint64 closedAt
    );

    /// @notice Emitted when the lease was finalized: `refund` went back to the consumer (or, if that transfer
    /// failed, was credited to it: `RefundCredited` follows) and `collateralUnlocked` of the provider's stake was
    /// unlocked.
    event LeaseFinalized(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        uint256 refund,
        uint256 collateralUnlocked
    );

    /// @notice Emitted when the provider claimed checkpoint `seq` of a silent consumer; final from `readyAt`.
    event UsageClaimed(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        uint64 seq,
        uint64 cumulativeGpuSeconds,
        uint64 readyAt
    );

    /// @notice Emitted when the consumer voided the pending claim with provider-signed evidence `evidenceSeq`.
    event ClaimDisputed(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        uint64 claimedSeq,
        uint64 evidenceSeq
    );

    /// @notice Emitted when a claim was finalized; `amount` and `fee` are zero when a later settlement made it moot.
    event ClaimFinalized(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        uint64 seq,
        uint64 cumulativeGpuSeconds,
        uint256 amount,
        uint256 fee
    );

    /// @notice Emitted when the consumer challenged the provider's liveness; it must answer before `deadline`.
    event LivenessChallenged(
        uint256 indexed leaseId, address indexed provider, address indexed consumer, uint64 deadline
    );

    /// @notice Emitted when the provider answered a liveness challenge.
    event LivenessAnswered(uint256 indexed leaseId, address indexed provider, address indexed consumer);

    /// @notice Emitted when an unanswered challenge was resolved: `slashed` of the collateral was slashed (mostly to
    /// the consumer) and the lease closed. Emitted by `resolveLiveness`, and by any transaction that closes the
    /// lease after a missed deadline (`closeLease`, `reportEquivocation`), right after `LeaseClosed`.
    event LivenessResolved(
        uint256 indexed leaseId, address indexed provider, address indexed consumer, uint256 slashed
    );

    /// @notice Emitted when `finder` proved that the provider signed two different checkpoints with the same seq;
    /// `slashed` of the lease collateral was slashed and the lease closed.
    event EquivocationReported(
        uint256 indexed leaseId,
        address indexed provider,
        address indexed consumer,
        address finder,
        uint64 seq,
        uint256 slashed
    );

    /// @notice Emitted by `finalizeLease` when the transfer of the refund to `consumer` failed (a reverting
    /// recipient, an issuer blocklist): `amount` was credited to it instead, for `withdrawRefund`.
    event RefundCredited(uint256 indexed leaseId, address indexed consumer, uint256 amount);

    /// @notice Emitted when `consumer` withdrew `amount` of credited refunds.
    event RefundWithdrawn(address indexed consumer, uint256 amount);

    /// @notice Emitted when `provider` cancelled all its offers with a nonce below `minNonce`.
    event OffersCancelled(address indexed provider, uint256 minNonce);

    /// @notice Emitted when `provider` withdrew `amount` of earnings.
    event EarningsWithdrawn(address indexed provider, uint256 amount);

    /// @notice Emitted when the treasury withdrew `amount` of accrued fees to `to`.
    event FeesWithdrawn(address indexed to, uint256 amount);

    /// @notice Emitted when the owner changed the protocol fee.
    event FeeUpdated(uint16 oldFeeBps, uint16 newFeeBps);

    /// @notice Emitted when the owner changed the treasury.
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);

    /*//////////////////////////////////////////////////////////////
                                ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice A constructor parameter is out of range.
    error LeaseEscrow_InvalidConfig();
    /// @notice A zero address was given where a real one is required.
    error LeaseEscrow_ZeroAddress();
    /// @notice A zero amount was given where a positive one is required.
    error LeaseEscrow_ZeroAmount();
    /// @notice The signature does not recover to `expectedSigner` (or is malformed / high-s).
    error LeaseEscrow_InvalidSignature(address expectedSigner);
    /// @notice The offer expired at `expiresAt` (a lease opens only while block.timestamp < expiresAt).
    error LeaseEscrow_OfferExpired(uint64 expiresAt);
    /// @notice The offer's nonce is below the provider's `minNonce`.
    error LeaseEscrow_OfferCancelled(address provider, uint256 nonce, uint256 minNonce);
    /// @notice The offer's terms are out of range (price 0 or > 2^64 - 1, minDuration 0, minDuration > maxDuration).
    error LeaseEscrow_InvalidOfferTerms();
    /// @notice Zero GPUs requested.
    error LeaseEscrow_ZeroGpus();
    /// @notice Only `available` of the offer's GPUs are free, fewer than `requested`.
    error LeaseEscrow_InsufficientCapacity(bytes32 offerHash, uint32 requested, uint32 available);
    /// @notice The deposit is below price * gpus * minDuration.
    error LeaseEscrow_DepositTooLow(uint256 deposit, uint256 minimum);
    /// @notice The deposit exceeds price * gpus * maxDuration, or 2^96 - 1.
    error LeaseEscrow_DepositTooHigh(uint256 deposit, uint256 maximum);
    /// @notice The lease does not exist.
    error LeaseEscrow_LeaseNotFound(uint256 leaseId);
    /// @notice The lease is not open.
    error LeaseEscrow_LeaseNotOpen(uint256 leaseId);
    /// @notice The lease was already finalized.
    error LeaseEscrow_LeaseFinalized(uint256 leaseId);
    /// @notice `caller` is not the lease's consumer.
    error LeaseEscrow_NotConsumer(uint256 leaseId, address caller);
    /// @notice `caller` is not the lease's provider.
    error LeaseEscrow_NotProvider(uint256 leaseId, address caller);
    /// @notice The checkpoint names lease `checkpointLeaseId`, not `leaseId`.
    error LeaseEscrow_CheckpointLeaseMismatch(uint256 leaseId, uint256 checkpointLeaseId);
    /// @notice The checkpoint's seq is not above the last settled seq (or exceeds 2^40 - 1).
    error LeaseEscrow_StaleSeq(uint256 leaseId, uint64 seq, uint64 lastSeq);
    /// @notice The checkpoint's cumulative usage is below the usage already settled.
    error LeaseEscrow_UsageDecreased(uint256 leaseId, uint64 cumulativeGpuSeconds, uint64 settledGpuSeconds);
    /// @notice The checkpoint's cumulative usage exceeds gpus * (min(now, endsAt, closedAt) - startedAt).
    error LeaseEscrow_UsageExceedsElapsed(uint256 leaseId, uint64 cumulativeGpuSeconds, uint256 maxGpuSeconds);
    /// @notice The lease is not closed (finalization needs a closed lease).
    error LeaseEscrow_LeaseNotClosed(uint256 leaseId);
    /// @notice The lease's paid-through end `endsAt` has passed (no liveness challenge after it).
    error LeaseEscrow_LeaseEnded(uint256 leaseId, uint64 endsAt);
    /// @notice The provider may close only from `endsAt`.
    error LeaseEscrow_LeaseNotEnded(uint256 leaseId, uint64 endsAt);
    /// @notice The settlement window of the closed lease ended at `windowEnd`.
    error LeaseEscrow_SettlementWindowClosed(uint256 leaseId, uint64 windowEnd);
    /// @notice The settlement window of the closed lease is open until `windowEnd`.
    error LeaseEscrow_SettlementWindowOpen(uint256 leaseId, uint64 windowEnd);
    /// @notice A claim is pending on the lease.
    error LeaseEscrow_ClaimPending(uint256 leaseId);
    /// @notice There is no pending claim on the lease.
    error LeaseEscrow_NoClaim(uint256 leaseId);
    /// @notice The claim's dispute window is open until `readyAt`.
    error LeaseEscrow_DisputeWindowOpen(uint256 leaseId, uint64 readyAt);
    /// @notice The claim's dispute window ended at `readyAt`.
    error LeaseEscrow_DisputeWindowClosed(uint256 leaseId, uint64 readyAt);
    /// @notice A claim must add usage: cumulative must exceed the settled usage.
    error LeaseEscrow_NothingToClaim(uint256 leaseId);
    /// @notice The dispute evidence does not contradict the claim.
    error LeaseEscrow_InvalidEvidence(uint256 leaseId);
    /// @notice A dispute refuted the checkpoints up to `disputedSeq`: a claim must carry a higher `seq`.
    error LeaseEscrow_SeqDisputed(uint256 leaseId, uint64 seq, uint64 disputedSeq);
    /// @notice A liveness challenge is pending (or its deadline was missed and it awaits resolution).
    error LeaseEscrow_ChallengePending(uint256 leaseId);
    /// @notice The last challenge was answered: the consumer may challenge again from `cooldownEnd`.
    error LeaseEscrow_ChallengeCooldown(uint256 leaseId, uint64 cooldownEnd);
    /// @notice There is no pending liveness challenge.
    error LeaseEscrow_NoChallenge(uint256 leaseId);
    /// @notice The liveness window is open until `deadline`.
    error LeaseEscrow_LivenessWindowOpen(uint256 leaseId, uint64 deadline);
    /// @notice The liveness window ended at `deadline`.
    error LeaseEscrow_LivenessWindowClosed(uint256 leaseId, uint64 deadline);
    /// @notice The two checkpoints are not an equivocation (different lease/seq, or identical).
    error LeaseEscrow_NotEquivocation(uint256 leaseId);
    /// @notice The lease's collateral was already fully slashed.
    error LeaseEscrow_NothingToSlash(uint256 leaseId);
    /// @notice `cancelOffersBelow` must raise the provider's min nonce above `current`.
    error LeaseEscrow_NonceNotIncreasing(uint256 nonce, uint256 current);
    /// @notice The fee exceeds `MAX_FEE_BPS`.
    error LeaseEscrow_FeeTooHigh(uint16 feeBps);
    /// @notice The batch is empty or longer than `MAX_BATCH_SIZE`.
    error LeaseEscrow_InvalidBatchLength(uint256 length);
    /// @notice Nothing to withdraw.
    error LeaseEscrow_NothingToWithdraw();
    /// @notice The token delivered `received` instead of `expected` (fee-on-transfer tokens are not supported).
    error LeaseEscrow_AmountNotReceived(uint256 expected, uint256 received);
    /// @notice `caller` is not the treasury.
    error LeaseEscrow_NotTreasury(address caller);

    /*//////////////////////////////////////////////////////////////
                                LEASES
    //////////////////////////////////////////////////////////////*/

    /// @notice Opens a lease on a provider-signed offer and pulls `deposit` from the caller (approve first).
    /// Locks deposit * collateralBps / 10_000 of the provider's free stake. Reverts with
    /// `LeaseEscrow_AmountNotReceived` unless exactly `deposit` arrived (fee-on-transfer tokens are refused; so
    /// does `topUp`).
    /// @param offer The offer, as signed.
    /// @param providerSig 65-byte EIP-712 signature of `offer` by `offer.provider`.
    /// @param gpus GPUs to lease, > 0 and <= the offer's unused capacity.
    /// @param deposit Tokens to escrow, in [price * gpus * minDuration, price * gpus * maxDuration].
    /// @return leaseId The new lease id (sequential from 1).
    function openLease(Offer calldata offer, bytes calldata providerSig, uint32 gpus, uint256 deposit)
        external
        returns (uint256 leaseId);

    /// @notice `openLease` with an ERC-2612 permit for `deposit` (a permit front-run by someone else is tolerated
    /// when the allowance is already in place).
    /// @param permitDeadline, v, r, s The permit of the caller to this escrow for `deposit`.
    /// @return leaseId The new lease id.
    function openLeaseWithPermit(
        Offer calldata offer,
        bytes calldata providerSig,
        uint32 gpus,
        uint256 deposit,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 leaseId);

    /// @notice Adds `amount` to an open lease's deposit (anyone may pay), moving `endsAt` (capped by maxDuration)
    /// and locking the matching extra collateral from the provider's free stake. Not while a liveness challenge is
    /// pending or its deadline was missed (`LeaseEscrow_ChallengePending`): a slash depends only on what was at
    /// stake when the fault happened.
    /// @param leaseId The lease.
    /// @param amount Tokens pulled from the caller; the new deposit may not exceed price * gpus * maxDuration.
    function topUp(uint256 leaseId, uint256 amount) external;

    /// @notice Settles a provider-signed checkpoint. Sent by the lease's consumer.
    /// @dev Requires seq > lastSeq, cumulative >= settled, cumulative <= gpus * (min(now, endsAt, closedAt) -
    /// startedAt), the lease open or closed within its settlement window (so price * cumulative <= deposit).
    /// Pays price * (cumulative - settled) minus the fee feeCum(cumulative) - feeCum(settled) to the provider's
    /// earnings, where feeCum(x) = floor(x * price * feeBps / 10_000) with the lease's fee rate (the one current
    /// when it was opened). The lease's fees feeCum(settled) are added to `accruedFees` at `finalizeLease`.
    /// @param leaseId The lease; must equal `cp.leaseId`.
    /// @param cp The checkpoint.
    /// @param providerSig 65-byte EIP-712 signature of `cp` by the lease's provider.
    function settle(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external;

    /// @notice Settles a checkpoint signed by the provider and co-signed by the consumer. Sent by the provider.
    /// @param consumerSig 65-byte EIP-712 signature of the same `cp` by the lease's consumer.
    function settleWithConsent(
        uint256 leaseId,
        UsageCheckpoint calldata cp,
        bytes calldata providerSig,
        bytes calldata consumerSig
    ) external;

    /// @notice Settles up to `MAX_BATCH_SIZE` checkpoints of leases whose consumer is the caller. An entry whose
    /// seq is already settled, or whose lease is finalized, is skipped with `SettlementSkipped`; any other
    /// failure reverts the whole batch.
    /// @return settledCount Entries settled (not skipped).
    function settleBatch(SettleItem[] calldata items) external returns (uint256 settledCount);

    /// @notice Closes an open lease: the consumer at any time, the provider from `endsAt`. Usage stops accruing.
    /// A pending liveness challenge ends; one whose deadline was missed is resolved as by `resolveLiveness`
    /// (slash, `LivenessResolved`), so a provider cannot escape it by closing.
    function closeLease(uint256 leaseId) external;

    /// @notice After the settlement window of a closed lease (anyone): refunds deposit - paid to the consumer,
    /// adds the lease's fees feeCum(settled) to `accruedFees`, unlocks the remaining collateral and releases the
    /// offer capacity. Reverts while a claim is pending. The refund is pushed with a bounded amount of gas; if that
    /// transfer fails it is credited to the consumer instead (`RefundCredited`, `withdrawRefund`), so no recipient
    /// can block finalization.
    function finalizeLease(uint256 leaseId) external;

    /*//////////////////////////////////////////////////////////////
                            SILENT PARTIES
    //////////////////////////////////////////////////////////////*/

    /// @notice Provider claims a checkpoint its consumer did not settle; final after `disputeWindow`. Allowed
    /// while open or within the settlement window, with the same checks as `settle`, cumulative > settled, and
    /// seq > `disputedSeq(leaseId)` (a disputed checkpoint, or any at or below the evidence's seq, cannot be
    /// claimed again).
    function claim(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external;

    /// @notice Consumer voids the pending claim with a provider-signed checkpoint of the same lease. Evidence
    /// counts when `cp.seq >= claim.seq && cp.cumulativeGpuSeconds < claim.cumulativeGpuSeconds`: the provider
    /// signed a later (or the same) seq with less usage, so the claimed usage contradicts its own records.
    /// Within the dispute window only. Raises `disputedSeq(leaseId)` to `cp.seq`: later claims need a higher seq.
    function dispute(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external;

    /// @notice After the dispute window (anyone): applies the claim like a settlement, or drops it if a later
    /// settlement made it moot.
    function finalizeClaim(uint256 leaseId) external;

    /// @notice Consumer challenges the provider of an open lease to prove liveness within `livenessWindow`.
    /// Challenges are bounded: one at a time, only before `endsAt`, and after an answered challenge not before
    /// `challengeCooldownEnd(leaseId)` = answer time + CHALLENGE_COOLDOWN_WINDOWS * livenessWindow
    /// (`LeaseEscrow_ChallengeCooldown`), so a provider answers at most one challenge per cooldown.
    function challengeLiveness(uint256 leaseId) external;

    /// @notice Provider answers a pending liveness challenge (its transaction is the signed response); starts the
    /// cooldown before the next challenge.
    function answerLiveness(uint256 leaseId) external;

    /// @notice After an unanswered challenge's deadline (anyone): slashes livenessSlashBps of the lease collateral
    /// (wronged and finder shares to the consumer) and closes the lease. The collateral is the one of the deposit at
    /// the challenge (no top-up while a challenge is pending). Closing the lease by any other path after the
    /// deadline resolves it the same way.
    function resolveLiveness(uint256 leaseId) external;

    /// @notice Anyone proves provider equivocation: two provider-signed checkpoints of `leaseId` with the same
    /// seq and different contents. Slashes the collateral of the deposit the lease opened with, less what was
    /// already slashed (that deposit is the only one certainly at stake when the pair was signed; top-ups cannot
    /// raise the slash; without top-ups this is all the remaining collateral), to consumer / caller / treasury, and closes the lease if open (resolving a missed liveness
    /// deadline first, as `closeLease` does). Allowed until the lease is finalized.
    function reportEquivocation(
        uint256 leaseId,
        UsageCheckpoint calldata cpA,
        bytes calldata sigA,
        UsageCheckpoint calldata cpB,
        bytes calldata sigB
    ) external;

    /*//////////////////////////////////////////////////////////////
                        PROVIDERS, FEES, ADMIN
    //////////////////////////////////////////////////////////////*/

    /// @notice Cancels all of the caller's offers with nonce < `nonce` (monotonic).
    function cancelOffersBelow(uint256 nonce) external;

    /// @notice Sends the caller (a provider) all its earnings.
    /// @return amount Tokens sent.
    function withdrawEarnings() external returns (uint256 amount);

    /// @notice Sends the caller (a consumer) all its credited refunds (see `finalizeLease`).
    /// @return amount Tokens sent.
    function withdrawRefund() external returns (uint256 amount);

    /// @notice Sends all accrued fees to `to`. Treasury only.
    /// @return amount Tokens sent.
    function withdrawFees(address to) external returns (uint256 amount);

    /// @notice Sets the protocol fee (owner only, <= MAX_FEE_BPS); applies to leases opened afterwards (a lease
    /// keeps the rate current at its open).
    function setFee(uint16 newFeeBps) external;

    /// @notice Sets the treasury (owner only).
    function setTreasury(address newTreasury) external;

    /*//////////////////////////////////////////////////////////////
                                VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Hard cap of the protocol fee in basis points (1_000 = 10%).
    function MAX_FEE_BPS() external view returns (uint16);

    /// @notice Maximum entries of `settleBatch`.
    function MAX_BATCH_SIZE() external view returns (uint256);

    /// @notice After an answered liveness challenge, the consumer may challenge again only this many
    /// `livenessWindow`s later.
    function CHALLENGE_COOLDOWN_WINDOWS() external view returns (uint32);

    /// @notice The lease `leaseId` (status None if it does not exist).
    function getLease(uint256 leaseId) external view returns (Lease memory);

    /// @notice The pending claim of `leaseId` (readyAt = 0 if none).
    function getClaim(uint256 leaseId) external view returns (Claim memory);

    /// @notice While `leaseId` is open, the time before which its consumer may not challenge again after an answered
    /// challenge (0 when no cooldown was set; it may lie in the past).
    function challengeCooldownEnd(uint256 leaseId) external view returns (uint64);

    /// @notice The highest seq refuted by a dispute on `leaseId` (0 if none); a claim must carry a higher seq.
    function disputedSeq(uint256 leaseId) external view returns (uint64);

    /// @notice Number of leases opened so far (the last lease id).
    function leaseCount() external view returns (uint256);

    /// @notice GPUs of offer `offerHash` held by unfinalized leases.
    function offerGpusInUse(bytes32 offerHash) external view returns (uint32);

    /// @notice EIP-712 struct hash of `offer` (the offer id).
    function hashOffer(Offer calldata offer) external pure returns (bytes32);

    /// @notice EIP-712 struct hash of `cp`.
    function hashCheckpoint(UsageCheckpoint calldata cp) external pure returns (bytes32);

    /// @notice The EIP-712 domain separator (name "gpunet LeaseEscrow", version "1").
    function domainSeparator() external view returns (bytes32);

    /// @notice Offers of `provider` with a lower nonce are cancelled.
    function minNonce(address provider) external view returns (uint256);

    /// @notice Unwithdrawn earnings of `provider`.
    function earnings(address provider) external view returns (uint256);

    /// @notice Refunds credited to `consumer` because their transfer failed at finalization, not yet withdrawn.
    function refunds(address consumer) external view returns (uint256);

    /// @notice Unwithdrawn protocol fees of finalized leases (what `withdrawFees` sends). Fees of leases not yet
    /// finalized are withheld from their settlements and held by the escrow until then.
    function accruedFees() external view returns (uint256);

    /// @notice Protocol fee in basis points for leases opened now.
    function feeBps() external view returns (uint16);

    /// @notice Receiver of protocol fees.
    function treasury() external view returns (address);

    /// @notice The payment token.
    function token() external view returns (address);

    /// @notice The provider staking contract.
    function staking() external view returns (IProviderStaking);

    /// @notice Collateral per lease in basis points of its deposit.
    function collateralBps() external view returns (uint16);

    /// @notice Share of the lease collateral slashed for an unanswered liveness challenge, in basis points.
    function livenessSlashBps() external view returns (uint16);

    /// @notice Seconds after close during which settlement and claims are still accepted.
    function settlementWindow() external view returns (uint32);

    /// @notice Seconds a claim can be disputed.
    function disputeWindow() external view returns (uint32);

    /// @notice Seconds a provider has to answer a liveness challenge.
    function livenessWindow() external view returns (uint32);
}
