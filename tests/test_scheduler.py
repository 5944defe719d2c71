"""The task state machine and the assignment policy, without any network."""

from __future__ import annotations

import trio

from p2pmr.master.policy import Policy
from p2pmr.master.scheduler import Abort, FailureKind, Scheduler, State, Task, backup_candidate


def make(n: int = 4, **policy: object) -> Scheduler:
    sched = Scheduler(Policy(**policy))  # type: ignore[arg-type]
    sched.add_tasks("map", [Task("map", i) for i in range(n)])
    return sched


def test_states_idle_in_progress_completed() -> None:
    sched = make(1)
    sched.book.add("p")
    task = sched.next_idle("map")
    assert task is not None and task.state is State.IDLE
    attempt = sched.start(task, "p", now=0.0)
    assert task.state is State.IN_PROGRESS and sched.status("map").in_progress == 1
    assert sched.succeed(task, attempt, "out", now=1.0) == (True, set())
    assert task.state is State.COMPLETED and task.output == "out" and task.duration == 1.0
    assert sched.status("map").complete == 1 and sched.phase_done("map")


def test_new_peer_earns_larger_windows_and_loses_them() -> None:
    sched = make(20, max_batch=8)
    record = sched.book.add("p")
    assert record.window == 1
    for expected in (2, 4, 8, 8):
        task = sched.next_idle("map")
        assert task is not None
        sched.succeed(task, sched.start(task, "p", 0.0), None, 1.0)
        assert record.window == expected
    sched.book.failed("p", now=10.0)
    assert record.window == 4 and record.not_before > 10.0
    assert list(sched.book.available(now=10.0)) == []  # cooling off
    assert [r.peer for r in sched.book.available(now=20.0)] == ["p"]


def test_repeated_failures_exclude_a_peer() -> None:
    sched = make(4, exclude_after=3)
    record = sched.book.add("bad")
    for _ in range(3):
        task = sched.next_idle("map")
        assert task is not None
        sched.fail(task, sched.start(task, "bad", 0.0), FailureKind.INFRA, "timeout")
    assert record.excluded and list(sched.book.available(now=100.0)) == []
    assert all(t.state is State.IDLE for t in sched.phase_tasks("map"))  # nothing lost


def test_user_errors_fail_the_task_after_the_limit() -> None:
    sched = make(1, max_user_errors=3)
    sched.book.add("p")
    task = sched.phase_tasks("map")[0]
    for i in range(3):
        assert task.state is State.IDLE
        sched.fail(task, sched.start(task, "p", 0.0), FailureKind.USER, f"boom {i}", "tb")
    assert task.state is State.FAILED and sched.failed_task("map") is task
    assert task.last_error == "boom 2" and task.last_traceback == "tb"
    assert sched.book["p"].failures == 0  # user code errors are not the peer's fault


def test_unreachable_and_busy_do_not_count_against_the_task() -> None:
    sched = make(1, max_task_failures=2)
    sched.book.add("p")
    task = sched.phase_tasks("map")[0]
    for _ in range(5):
        sched.fail(task, sched.start(task, "p", 0.0), FailureKind.UNREACHABLE, "gone")
        sched.fail(task, sched.start(task, "p", 0.0), FailureKind.BUSY, "busy")
    assert task.state is State.IDLE and task.failures == 0


def test_first_result_wins_and_duplicates_are_ignored() -> None:
    sched = make(1)
    sched.book.add("a")
    sched.book.add("b")
    task = sched.phase_tasks("map")[0]
    first = sched.start(task, "a", 0.0)
    second = sched.start(task, "b", 1.0, backup=True)
    assert sched.succeed(task, second, "from b", 2.0)[0]
    assert not sched.succeed(task, first, "from a", 3.0)[0]
    assert task.output == "from b" and task.completed_by == "b"
    assert sched.book["a"].in_flight == 0 and sched.book["b"].in_flight == 0


def test_backups_only_at_the_end_and_only_for_stragglers() -> None:
    sched = make(3, backup_factor=2.5, backup_min_age=3.0)
    for peer in ("a", "b", "c"):
        sched.book.add(peer)
    t0, t1, t2 = sched.phase_tasks("map")
    a0 = sched.start(t0, "a", 0.0)
    a0.running_since = 0.0
    sched.succeed(t0, a0, None, 1.0)  # typical duration: 1 s
    a1 = sched.start(t1, "b", 1.0)
    a1.running_since = 1.0
    assert backup_candidate(sched, "map", "c", now=10.0) is None  # t2 still waits to start
    a2 = sched.start(t2, "c", 1.0)
    a2.running_since = 1.0
    assert backup_candidate(sched, "map", "a", now=2.0) is None   # not slow yet
    assert backup_candidate(sched, "map", "a", now=4.5) is t1     # 3.5 s > max(3, 2.5)
    assert backup_candidate(sched, "map", "b", now=4.5) is t2     # never its own task
    sched.start(t1, "a", 4.5, backup=True)
    assert backup_candidate(sched, "map", "c", now=9.0) is None   # two attempts is the cap


def test_queued_tasks_are_not_mistaken_for_stragglers() -> None:
    """A task queued on a peer that keeps making progress is not slow."""
    sched = make(6, backup_factor=2.5, backup_min_age=3.0)
    sched.book.add("a")
    sched.book.add("b")
    tasks = sched.phase_tasks("map")
    first = sched.start(tasks[0], "a", 0.0)
    sched.running(first, 0.0)
    sched.succeed(tasks[0], first, None, 1.0)  # typical: 1 s
    queued = [sched.start(t, "a", 1.0) for t in tasks[1:]]  # one worker: a queue
    sched.running(queued[0], 1.0)
    sched.succeed(tasks[1], queued[0], None, 2.0)
    sched.running(queued[1], 2.0)
    sched.succeed(tasks[2], queued[1], None, 3.0)
    sched.running(queued[2], 3.0)
    # At 5 s the last task has waited 4 s, but the peer progressed at 3 s.
    assert sched.age(queued[4], 5.0) == 2.0
    assert backup_candidate(sched, "map", "b", now=5.0) is None
    # The running one, though, is a straggler once past the threshold.
    assert backup_candidate(sched, "map", "b", now=6.5) is tasks[3]
    # A peer that stops progressing gets its queued tasks backed up too.
    assert sched.age(queued[4], 9.0) == 6.0


def test_verify_needs_agreement_of_distinct_peers_and_names_liars() -> None:
    sched = make(1, verify=2, max_attempts_running=3)
    for peer in ("honest1", "liar", "honest2"):
        sched.book.add(peer)
    task = sched.phase_tasks("map")[0]
    first = sched.start(task, "honest1", 0.0)
    assert sched.next_idle("map", "honest1") is None      # never twice on one peer
    assert sched.next_idle("map", "liar") is task         # wants a second opinion
    second = sched.start(task, "liar", 0.0)
    assert sched.next_idle("map", "honest2") is None      # two attempts cover verify=2
    assert sched.succeed(task, first, "right", 1.0, signature="A") == (False, set())
    assert sched.succeed(task, second, "wrong", 1.0, signature="B") == (False, set())
    assert task.state is State.IDLE                       # disagreement: ask a third peer
    assert sched.next_idle("map", "liar") is None and sched.next_idle("map", "honest2") is task
    third = sched.start(task, "honest2", 2.0)
    done, liars = sched.succeed(task, third, "right", 3.0, signature="A")
    assert done and liars == {"liar"} and task.output == "right"


def test_an_abort_before_the_attempt_is_wired_is_kept_not_lost() -> None:
    """A backup superseded between dispatch and its stream opening must still
    be stopped once the stream code takes it over."""
    sched = make(1)
    sched.book.add("p")
    task = sched.next_idle("map")
    assert task is not None
    attempt = sched.start(task, "p", now=0.0)
    attempt.abort(Abort.SUPERSEDED, "another attempt finished first")
    assert not attempt.aborted
    seen: list[tuple[Abort, str]] = []
    attempt.arm(lambda kind, reason: seen.append((kind, reason)))
    assert attempt.aborted and seen == [(Abort.SUPERSEDED, "another attempt finished first")]
    attempt.abort(Abort.LOST, "again")  # once only
    assert len(seen) == 1


def test_a_task_that_failed_on_a_peer_goes_elsewhere_while_it_can() -> None:
    sched = make(3)
    for peer in ("bad", "good"):
        sched.book.add(peer)
    task = sched.next_idle("map", "bad")
    assert task is not None and task.index == 0
    sched.fail(task, sched.start(task, "bad", 0.0), FailureKind.INFRA, "INTERNAL: boom")
    assert sched.next_idle("map", "bad").index == 1       # not task 0 again…
    assert sched.next_idle("map", "good") is task         # …which waits for another peer
    sched.book.exclude("good", "gone")
    assert sched.next_idle("map", "bad") is task          # no one else left: back it goes


def test_every_failure_counts_and_three_in_a_row_exclude() -> None:
    sched = make(6, exclude_after=3)
    sched.book.add("bad")
    sched.book.add("good")
    for i in range(3):
        task = sched.next_idle("map", "bad")
        assert task is not None
        sched.fail(task, sched.start(task, "bad", float(i)), FailureKind.INFRA, "refused",
                   now=float(i))
    record = sched.book["bad"]
    assert record.failures == 3 and record.excluded
    assert "3 failures in a row" in record.excluded_reason and "refused" in record.excluded_reason
    assert [r.peer for r in sched.book.take_exclusions()] == ["bad"]
    assert sched.book.take_exclusions() == []


def test_claimed_user_errors_count_once_another_peer_runs_the_task() -> None:
    """A peer that claims every task's code raised is found out by the peers
    that run the same tasks fine, and excluded on its failure rate."""
    sched = make(20)
    for peer in ("liar", "a", "b"):
        sched.book.add(peer)
    for _ in range(10):
        task = sched.next_idle("map", "liar")
        assert task is not None
        before = sched.book["liar"].failures
        sched.fail(task, sched.start(task, "liar", 0.0), FailureKind.USER, "raised", "tb")
        assert sched.book["liar"].failures == before  # not yet: it might be the code
        other = "a" if task.index % 2 else "b"
        assert sched.next_idle("map", other) is task
        sched.succeed(task, sched.start(task, other, 0.0), "ok", 1.0)
        if sched.book["liar"].excluded:
            break
    record = sched.book["liar"]
    assert record.excluded and "attempts" in record.excluded_reason
    assert record.failures <= 8
    assert not sched.book["a"].excluded and not sched.book["b"].excluded


def test_a_swarm_that_fails_alike_excludes_nobody() -> None:
    """Worker deaths spread evenly (a job that crashes a third of the time)
    are the job's doing, not any one peer's."""
    import random

    rng = random.Random(4)
    sched = make(300)
    peers = ["a", "b", "c"]
    for peer in peers:
        sched.book.add(peer)
    while (task := sched.next_idle("map")) is not None:
        for peer in rng.sample(peers, 3):
            if not sched.may_take(task, peer):
                continue
            attempt = sched.start(task, peer, 0.0)
            if rng.random() < 0.33:
                sched.fail(task, attempt, FailureKind.WORKER, "worker died")
            else:
                sched.succeed(task, attempt, "ok", 1.0)
            break
    assert not any(r.excluded for r in sched.book.records.values())
    assert all(r.failures > 10 for r in sched.book.records.values())


def test_under_verify_a_task_failed_by_one_peer_can_still_be_verified() -> None:
    """A fails the task, B runs it: the second opinion can only come from A,
    since B has given its own. It must not be stuck between the two rules."""
    sched = make(1, verify=2, max_attempts_running=3)
    for peer in ("a", "b"):
        sched.book.add(peer)
    task = sched.phase_tasks("map")[0]
    sched.fail(task, sched.start(task, "a", 0.0), FailureKind.INFRA, "stream broke",
               blame_peer=False)
    assert sched.next_idle("map", "a") is None       # b has not failed it: b first
    sched.succeed(task, sched.start(task, "b", 1.0), "out", 2.0, signature="S")
    assert sched.next_idle("map", "b") is None       # b already gave its opinion
    assert sched.next_idle("map", "a") is task       # so a may try again
    done, _ = sched.succeed(task, sched.start(task, "a", 3.0), "out", 4.0, signature="S")
    assert done


async def test_one_event_is_one_charge_however_many_streams_saw_it() -> None:
    """A peer holding several streams that dies or falls silent fails each
    stream at once: that is one failure, not one per stream. A peer that
    fails again after being heard from again is charged again."""
    from p2pmr.master.liveness import PeerWatch

    sched = Scheduler(Policy())
    watch = PeerWatch(None, sched, peer_timeout=5.0, changed=lambda: None)  # type: ignore[arg-type]
    record = sched.book.add("p")
    watch.heard("p")  # type: ignore[arg-type]
    for stream in range(5):
        watch.charge("p", f"stream {stream} broke")  # type: ignore[arg-type]
    assert record.failures == 1 and not record.excluded
    await trio.sleep(0.01)
    watch.heard("p")  # type: ignore[arg-type]  # a frame came in since
    watch.charge("p", "refused an assignment")  # type: ignore[arg-type]
    assert record.failures == 2


def test_a_peer_known_to_be_slow_has_its_tasks_backed_up_sooner() -> None:
    """LATE's point: a task on a peer whose tasks take ten times the typical
    is backed up once it is past the typical by backup_factor, not after the
    minimum age that protects tasks on ordinary peers."""
    sched = make(5, backup_factor=2.5, backup_min_age=3.0, slow_peer_factor=4.0)
    for peer in ("fast", "slow", "other"):
        sched.book.add(peer)
    t = sched.phase_tasks("map")
    for peer in ("fast", "slow"):  # a first task is not counted: it warms the peer up
        sched.book[peer].timed(5.0, None)
    for task, peer, start, end in ((t[0], "fast", 0.0, 0.1), (t[1], "fast", 0.1, 0.2),
                                   (t[2], "slow", 0.0, 1.0)):
        attempt = sched.start(task, peer, start)
        sched.running(attempt, start)
        sched.succeed(task, attempt, None, end)
    assert sched.book["slow"].slowness >= 4.0 and sched.book["fast"].slowness < 4.0
    on_slow = sched.start(t[3], "slow", 1.0)
    sched.running(on_slow, 1.0)
    on_fast = sched.start(t[4], "fast", 1.0)
    sched.running(on_fast, 1.0)
    assert backup_candidate(sched, "map", "other", now=1.1) is None  # not past 2.5 x typical
    assert backup_candidate(sched, "map", "other", now=1.5) is t[3]  # the slow peer's task
    sched.start(t[3], "other", 1.5, backup=True)
    assert backup_candidate(sched, "map", "other", now=2.0) is None  # the fast one: 3 s floor
    assert backup_candidate(sched, "map", "slow", now=4.1) is t[4]
