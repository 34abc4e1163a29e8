"""NodeState (zaggd/collector/nodes.py): a restart is told from two producers
sharing a node name, each clash is warned about once, naming both."""

from __future__ import annotations

from zaggd.collector.nodes import MAX_INSTANCES, RESTART_CONFIRM_S, NodeState

A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"


def heard(node: NodeState, instance: str, replay: str, now: float) -> list[str]:
    return node.heard(instance, replay, now)[0]


def test_a_new_instance_is_a_restart_once_the_old_one_stays_silent() -> None:
    node = NodeState("web")
    assert heard(node, A, "tcp://h:1", 0.0) == []
    assert heard(node, B, "tcp://h:1", 1.0) == []
    assert node.confirmed_restart(1.0 + RESTART_CONFIRM_S / 2) is None
    assert heard(node, B, "tcp://h:1", 2.0) == []
    assert node.confirmed_restart(1.0 + RESTART_CONFIRM_S) == (A, B)
    assert node.confirmed_restart(100.0) is None  # logged once
    assert not node.clash


def test_an_old_instance_heard_again_is_a_second_producer_warned_once() -> None:
    node = NodeState("web")
    heard(node, A, "tcp://a:1", 0.0)
    heard(node, B, "tcp://b:1", 0.5)
    warnings = heard(node, A, "tcp://a:1", 1.0)
    assert len(warnings) == 1
    assert "node name clash: node web" in warnings[0]
    assert all(s in warnings[0] for s in (A, B, "tcp://a:1", "tcp://b:1"))
    assert node.clash
    assert node.confirmed_restart(1000.0) is None  # never called a restart
    for t in range(2, 50):
        assert heard(node, B if t % 2 else A, "", float(t)) == []
    warnings = [w for t in range(3) for w in heard(node, C if t == 0 else B, "", 60.0 + t)]
    assert len(warnings) == 1 and C in warnings[0]  # a third one: one more warning


def test_one_instance_from_two_endpoints_in_turn_is_a_shared_state_folder() -> None:
    node = NodeState("web")
    heard(node, A, "tcp://a:1", 0.0)
    assert heard(node, A, "tcp://b:1", 1.0) == []  # moved: a reload, say
    warnings = heard(node, A, "tcp://a:1", 2.0)
    assert len(warnings) == 1 and "share one state" in warnings[0]
    assert heard(node, A, "tcp://b:1", 3.0) == []
    assert heard(node, A, "tcp://a:1", 4.0) == []


def test_a_hello_before_the_first_heartbeat_is_no_clash() -> None:
    node = NodeState("web")
    heard(node, A, "", 0.0)
    node.touch(B, 1.0)  # the restarted producer's hello comes first
    assert heard(node, B, "", 1.1) == []
    assert not node.clash and node.confirmed_restart(1.1 + RESTART_CONFIRM_S) == (A, B)


def test_instances_a_node_keeps_are_bounded() -> None:
    node = NodeState("web")
    evicted = []
    for n in range(3 * MAX_INSTANCES):
        evicted.append(node.heard(f"{n:016x}", f"tcp://h:{n + 1}", float(n))[1])
    assert len(node.instances) == MAX_INSTANCES
    assert (
        node.latest() is not None
        and node.latest() is node.instances[f"{3 * MAX_INSTANCES - 1:016x}"]
    )
    assert sum(e is not None for e in evicted) == 2 * MAX_INSTANCES
