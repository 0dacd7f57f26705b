// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ILeaseEscrow} from "../interfaces/ILeaseEscrow.sol";
import {LeaseState} from "../types/LeaseState.sol";
import {LeaseEscrowBase} from "./LeaseEscrowBase.sol";

/// @title LeaseFaults
/// @notice The paths for a party that stops cooperating: a provider's usage claim against a silent consumer (claim,
/// dispute, finalizeClaim), a consumer's liveness challenge against a silent provider (challenge, answer,
/// resolve), and the report of a provider that signed two checkpoints with one seq (equivocation).
abstract contract LeaseFaults is LeaseEscrowBase {
    /*//////////////////////////////////////////////////////////////
                        SILENT CONSUMER: CLAIMS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function claim(uint256 leaseId, UsageCheckpoint calldata cp, bytes calldata providerSig) external {
        if (cp.leaseId != leaseId) revert LeaseEscrow_CheckpointLeaseMismatch(leaseId, cp.leaseId);
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        LeaseState st = lease.state;
        if (st.status() == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        if (o.provider != msg.sender) revert LeaseEscrow_NotProvider(leaseId, msg.sender);
        _checkSettleable(leaseId, st);
        uint64 disputedSeq_ = _checkNoClaim(leaseId, cp.seq);
        _checkUsage(leaseId, head, st, o, cp.seq, cp.cumulativeGpuSeconds);
        if (cp.cumulativeGpuSeconds == st.settledGpuSeconds()) revert LeaseEscrow_NothingToClaim(leaseId);
        _verify(_hashCheckpoint(cp), providerSig, o.provider);
        uint64 readyAt = uint64(block.timestamp) + _disputeWindow;
        _claims[leaseId] = ClaimData(cp.seq, cp.cumulativeGpuSeconds, readyAt, disputedSeq_);
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
        // The claim is voided, and no claim at or below the evidence's seq (>= the claim's) can be made again: the
        // evidence refutes any such claim with more usage than it shows.
        _claims[leaseId] = ClaimData(0, 0, 0, cp.seq);
        emit ClaimDisputed(leaseId, provider, consumer, c.seq, cp.seq);
    }

    /// @inheritdoc ILeaseEscrow
    function finalizeClaim(uint256 leaseId) external {
        ClaimData memory c = _claims[leaseId];
        if (c.readyAt == 0) revert LeaseEscrow_NoClaim(leaseId);
        if (block.timestamp < c.readyAt) revert LeaseEscrow_DisputeWindowOpen(leaseId, c.readyAt);
        _claims[leaseId] = ClaimData(0, 0, 0, c.disputedSeq);
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        address consumer = head.consumer;
        LeaseState st = lease.state;
        OfferTerms memory o = _offers[head.offerId];
        uint256 net;
        uint256 fee;
        // A settlement after the claim (higher seq, or more usage) makes it moot. The claim's usage was checked
        // against elapsed time when it was made; the lease cannot be finalized while a claim is pending.
        if (c.seq > st.lastSeq() && c.cumulativeGpuSeconds >= st.settledGpuSeconds()) {
            (net, fee) = _pay(lease, st, o.pricePerGpuSecond, c.seq, c.cumulativeGpuSeconds);
            if (net != 0) _addEarnings(o.provider, net);
            emit LeaseSettled(leaseId, o.provider, consumer, c.seq, c.cumulativeGpuSeconds, net + fee, fee);
        }
        emit ClaimFinalized(leaseId, o.provider, consumer, c.seq, c.cumulativeGpuSeconds, net + fee, fee);
    }

    /// @inheritdoc ILeaseEscrow
    function getClaim(uint256 leaseId) external view returns (Claim memory) {
        ClaimData memory c = _claims[leaseId];
        return Claim(c.seq, c.cumulativeGpuSeconds, c.readyAt);
    }

    /// @inheritdoc ILeaseEscrow
    function disputedSeq(uint256 leaseId) external view returns (uint64) {
        return _claims[leaseId].disputedSeq;
    }

    /// @dev Reverts if a claim is pending or `seq` is at or below the last disputed seq; returns the latter.
    function _checkNoClaim(uint256 leaseId, uint64 seq) private view returns (uint64 disputedSeq_) {
        ClaimData memory c = _claims[leaseId];
        if (c.readyAt != 0) revert LeaseEscrow_ClaimPending(leaseId);
        disputedSeq_ = c.disputedSeq;
        if (seq <= disputedSeq_) revert LeaseEscrow_SeqDisputed(leaseId, seq, disputedSeq_);
    }

    /*//////////////////////////////////////////////////////////////
                    SILENT PROVIDER: LIVENESS CHALLENGES
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function challengeLiveness(uint256 leaseId) external {
        LeaseData storage lease = _leases[leaseId];
        LeaseHead memory head = lease.head;
        if (head.consumer != msg.sender) revert LeaseEscrow_NotConsumer(leaseId, msg.sender);
        LeaseState st = lease.state;
        if (st.status() != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        if (st.livenessDeadline() != 0) revert LeaseEscrow_ChallengePending(leaseId);
        OfferTerms memory o = _offers[head.offerId];
        uint256 endsAt = _endsAt(head, o, st.deposit());
        if (block.timestamp >= endsAt) revert LeaseEscrow_LeaseEnded(leaseId, uint64(endsAt));
        uint32 cooldownEnd = st.challengeCooldownEnd();
        if (block.timestamp < cooldownEnd) revert LeaseEscrow_ChallengeCooldown(leaseId, cooldownEnd);
        uint32 deadline = uint32(block.timestamp + _livenessWindow);
        lease.state = st.setLivenessDeadline(deadline);
        emit LivenessChallenged(leaseId, o.provider, msg.sender, deadline);
    }

    /// @inheritdoc ILeaseEscrow
    function answerLiveness(uint256 leaseId) external {
        LeaseData storage lease = _leases[leaseId];
        LeaseState st = lease.state;
        LeaseHead memory head = lease.head;
        address provider = _offers[head.offerId].provider;
        if (provider != msg.sender) revert LeaseEscrow_NotProvider(leaseId, msg.sender);
        if (st.status() != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        uint32 deadline = st.livenessDeadline();
        if (deadline == 0) revert LeaseEscrow_NoChallenge(leaseId);
        if (block.timestamp >= deadline) revert LeaseEscrow_LivenessWindowClosed(leaseId, deadline);
        uint256 cooldownEnd = block.timestamp + uint256(_livenessWindow) * CHALLENGE_COOLDOWN_WINDOWS;
        if (cooldownEnd > type(uint32).max) cooldownEnd = type(uint32).max;
        lease.state = st.setChallengeCooldownEnd(uint32(cooldownEnd));
        emit LivenessAnswered(leaseId, provider, head.consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function resolveLiveness(uint256 leaseId) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState st = lease.state;
        if (st.status() != LeaseStatus.Open) revert LeaseEscrow_LeaseNotOpen(leaseId);
        uint32 deadline = st.livenessDeadline();
        if (deadline == 0) revert LeaseEscrow_NoChallenge(leaseId);
        if (block.timestamp < deadline) revert LeaseEscrow_LivenessWindowOpen(leaseId, deadline);
        LeaseHead memory head = lease.head;
        address consumer = head.consumer;
        address provider = _offers[head.offerId].provider;
        // Closing resolves the missed deadline (see _close).
        uint256 slashAmount = _close(lease, st, leaseId, provider, consumer);
        if (slashAmount != 0) _staking.slash(provider, slashAmount, consumer, consumer);
    }

    /// @inheritdoc ILeaseEscrow
    function challengeCooldownEnd(uint256 leaseId) external view returns (uint64) {
        LeaseState st = _leases[leaseId].state;
        return st.status() == LeaseStatus.Open ? st.challengeCooldownEnd() : 0;
    }

    /*//////////////////////////////////////////////////////////////
                            EQUIVOCATION
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc ILeaseEscrow
    function reportEquivocation(
        uint256 leaseId,
        UsageCheckpoint calldata cpA,
        bytes calldata sigA,
        UsageCheckpoint calldata cpB,
        bytes calldata sigB
    ) external nonReentrant {
        LeaseData storage lease = _leases[leaseId];
        LeaseState st = lease.state;
        if (st.status() == LeaseStatus.None) revert LeaseEscrow_LeaseNotFound(leaseId);
        if (st.status() == LeaseStatus.Finalized) revert LeaseEscrow_LeaseFinalized(leaseId);
        address provider = _offers[lease.head.offerId].provider;
        _checkEquivocation(leaseId, provider, cpA, sigA, cpB, sigB);
        _slashEquivocation(lease, st, leaseId, provider, cpA.seq);
    }

    /// @dev Closes the lease if open (resolving a missed liveness deadline first, see _close) and slashes the
    /// equivocation (see _equivocationSlash); the staking calls come last.
    function _slashEquivocation(LeaseData storage lease, LeaseState st, uint256 leaseId, address provider, uint64 seq)
        private
    {
        address consumer = lease.head.consumer;
        uint256 livenessSlash;
        if (st.status() == LeaseStatus.Open) livenessSlash = _close(lease, st, leaseId, provider, consumer);
        uint256 slashAmount = _equivocationSlash(leaseId, st.deposit());
        if (slashAmount == 0) revert LeaseEscrow_NothingToSlash(leaseId);
        _slashed[leaseId] += slashAmount;
        emit EquivocationReported(leaseId, provider, consumer, msg.sender, seq, slashAmount);
        if (livenessSlash != 0) _staking.slash(provider, livenessSlash, consumer, consumer);
        _staking.slash(provider, slashAmount, consumer, msg.sender);
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
}
