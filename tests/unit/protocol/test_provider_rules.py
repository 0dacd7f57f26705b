"""The provider's side of a lease as a pure state machine: job, meter, outgoing queue, and what follows the chain."""

from __future__ import annotations

from eth_account import Account
from eth_utils import keccak
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.lease import (
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseFinalized,
    ContractReceiveLeaseOpened,
    ContractReceiveTopUp,
    ContractSendWithdraw,
    JobEnd,
    JobEnded,
    JobPhase,
    JobRequest,
    JobStarted,
    JobStartFailed,
    Notice,
    NotifyUser,
    OfferTerms,
    ProviderTick,
    ReceiveAck,
    ReceiveJobSpec,
    ReleaseDevices,
    StartJob,
    StopJob,
    StoreCheckpoint,
    transition,
)
from node.protocol.lease_messages import (
    MAX_LOG_TAIL_BYTES,
    CheckpointMessage,
    HeartbeatMessage,
    JobResultMessage,
    decode_message,
    utf8_tail,
)
from node.protocol.provider_lease import ProviderKeys, new_provider_lease

WALLET = keccak(b"provider wallet")
PROVIDER = Account.from_key(WALLET).address
NODE = SigningKey(keccak(b"provider node key"))
KEYS = ProviderKeys(NODE, WALLET)
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
START = 1_700_000_000
LEASE = 4
TERMS = OfferTerms(b"\x0f" * 32, PROVIDER, bytes(NODE.verify_key), 10, 3_600)
OPENED = ContractReceiveLeaseOpened(LEASE, TERMS.offer_hash, PROVIDER, "0x" + "cc" * 20, 2, 10, 12_000, START,
                                    START + 600)
JOB = JobRequest(("train", "--fast"), (("SEED", "1"),), 60)
PEER = "12D3KooWConsumer"


def running():
    state = new_provider_lease(OPENED, TERMS, DOMAIN, devices=(0, 1))
    state, _ = transition(state, ReceiveJobSpec(PEER, JOB))
    state, _ = transition(state, JobStarted(PEER))
    return state


def tick(state, t_s, interval_ms=6_000, job_running=True):
    return transition(state, ProviderTick((START + t_s) * 1000, job_running, None, interval_ms), KEYS)


def queued(state):
    return [decode_message(raw) for raw in state.provider.outq]


def test_the_first_job_spec_starts_the_job_once():
    state = new_provider_lease(OPENED, TERMS, DOMAIN, devices=(0, 1))
    state, events = transition(state, ReceiveJobSpec(PEER, JOB))
    assert events == [StartJob(LEASE, JOB, (0, 1), PEER)] and state.provider.job is JobPhase.STARTING
    again, events = transition(state, ReceiveJobSpec(PEER, JOB))
    assert again == state and events == []
    state, _ = transition(state, JobStarted(PEER))
    assert state.provider.job is JobPhase.RUNNING and state.provider.peer == PEER


def test_a_refused_job_may_be_sent_again():
    state = new_provider_lease(OPENED, TERMS, DOMAIN)
    state, _ = transition(state, ReceiveJobSpec(PEER, JOB))
    state, _ = transition(state, JobStartFailed("command not allowed"))
    assert state.provider.job is JobPhase.NONE and state.provider.job_error == "command not allowed"
    assert state.provider.peer is None  # not metering: no job runs
    _, events = transition(state, ReceiveJobSpec(PEER, JOB))
    assert [type(e) for e in events] == [StartJob]


def test_no_job_spec_once_the_lease_is_closing():
    state = new_provider_lease(OPENED, TERMS, DOMAIN)
    state, _ = transition(state, ContractReceiveLeaseClosed(LEASE, START + 5, PROVIDER))
    state, events = transition(state, ReceiveJobSpec(PEER, JOB))
    assert state.provider.job is JobPhase.NONE and events[0].notice is Notice.IGNORED


def test_ticks_queue_beats_and_a_checkpoint_when_due_and_acks_take_them_off():
    state = running()
    state, events = tick(state, 2)
    assert events == [] and [type(m) for m in queued(state)] == [HeartbeatMessage]
    state, _ = tick(state, 4)
    state, events = tick(state, 6)
    assert [type(m) for m in queued(state)] == [HeartbeatMessage] * 3 + [CheckpointMessage]
    (store,) = events
    assert isinstance(store, StoreCheckpoint) and store.signed_cp == queued(state)[-1].signed_cp
    assert store.signed_cp.checkpoint.cumulative_gpu_seconds == 12  # 2 GPUs x 6 s
    state, _ = transition(state, ReceiveAck(2))
    assert [type(m) for m in queued(state)] == [HeartbeatMessage, CheckpointMessage]
    state, _ = transition(state, ReceiveAck(5))
    assert state.provider.outq == ()


def test_an_idle_job_accrues_nothing():
    state = running()
    state, _ = tick(state, 2, job_running=False)
    state, _ = tick(state, 4, job_running=False)
    assert state.provider.meter.gpu_ms == 0


def test_the_job_result_is_queued_once_with_its_tail_cut_by_bytes():
    state = running()
    bar = "\u2588" * 3000 + "\n"  # 9,001 bytes: a character cut at 4,000 would not fit the message
    state, _ = transition(state, JobEnded(JobEnd(0, utf8_tail(bar.encode()), True)))
    assert state.provider.job is JobPhase.ENDED
    state, _ = tick(state, 2)
    state, _ = tick(state, 4)
    results = [m for m in queued(state) if isinstance(m, JobResultMessage)]
    assert len(results) == 1 and results[0].exit_code == 0 and results[0].simulated
    assert len(results[0].log_tail.encode()) <= MAX_LOG_TAIL_BYTES and bar.endswith(results[0].log_tail)


def test_utf8_tail_cuts_on_a_character_boundary():
    assert utf8_tail("abc", 2) == "bc"
    assert utf8_tail("\u2588\u2588", 4) == "\u2588"  # 6 bytes: 4 would split the first character
    assert utf8_tail(b"ok \xff\xfe") == "ok \ufffd\ufffd"  # invalid bytes are replaced, not refused
    assert utf8_tail("x" * 5000) == "x" * MAX_LOG_TAIL_BYTES


def test_the_close_stops_the_job_and_the_next_tick_cuts_the_final_checkpoint():
    state = running()
    for t in (2, 4, 6, 8):
        state, _ = tick(state, t)
    state, _ = transition(state, ReceiveAck(100))
    state, events = transition(state, ContractReceiveLeaseClosed(LEASE, START + 9, PROVIDER))
    assert StopJob(LEASE) in events and state.provider.meter.closed_at == START + 9
    state, events = tick(state, 10)
    final = queued(state)[-1]
    assert isinstance(final, CheckpointMessage) and final.signed_cp.checkpoint.timestamp == START + 9
    assert state.provider.final_sent and [type(e) for e in events] == [StoreCheckpoint]
    again, events = tick(state, 12)
    assert again == state and events == []  # metering is over


def test_a_top_up_moves_the_meters_end():
    state = running()
    state, _ = transition(state, ContractReceiveTopUp(LEASE, 6_000, 18_000, START + 900))
    assert state.provider.meter.ends_at == START + 900 and state.ends_at == START + 900


def test_finalization_releases_the_devices_and_collects_the_earnings_once():
    state = running()
    state, _ = transition(state, ContractReceiveLeaseClosed(LEASE, START + 9, PROVIDER))
    state, events = transition(state, ContractReceiveLeaseFinalized(LEASE, 11_000))
    assert [e for e in events if not isinstance(e, NotifyUser)] == [
        ReleaseDevices(LEASE, TERMS.offer_hash, (0, 1)), ContractSendWithdraw(LEASE)]
    _, events = transition(state, ContractReceiveLeaseFinalized(LEASE, 11_000))
    assert events == []
