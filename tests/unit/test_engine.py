"""Engine behaviour with in-memory resources: ordering, plan, apply, convergence, failure."""

from __future__ import annotations

import pytest
from told import tell

from fjord.config.desired import resolve
from fjord.config.loader import parse
from fjord.config.validate import check
from fjord.engine.apply import ApplyError, NotConverged, apply, apply_lock
from fjord.engine.change import Change
from fjord.engine.order import Ref, order
from fjord.engine.plan import StateUnreadable, make_plan
from fjord.engine.resource import Context, Resource
from fjord.errors import FjordError

CONFIG = """
host:
  fqdn: h.example.net
  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}
  dns: [192.0.2.53]
"""


@pytest.fixture
def ctx() -> Context:
    doc = parse(CONFIG)
    return Context(resolve(doc, check(doc)))


class Box(Resource):
    """A resource whose 'host state' is a dict entry."""

    kind = "box"

    def __init__(self, name: str, world: dict, want: str, after=(), fail=False):
        super().__init__(name)
        self.world, self.want, self.after, self.fail = world, want, after, fail

    def changes(self, ctx):
        if self.world.get(self.name) == self.want:
            return []
        action = "create" if self.name not in self.world else "update"
        return [Change(self.id, action, f"{self.name} = {self.want}", self._set)]

    def _set(self, ctx):
        if self.fail:
            raise FjordError("boom")
        self.world.setdefault("log", []).append(self.name)
        self.world[self.name] = self.want


class Recorder:
    def __init__(self):
        self.events = []

    def started(self, c):
        self.events.append(("start", c.resource))

    def finished(self, c, s):
        self.events.append(("done", c.resource))

    def failed(self, c, e):
        self.events.append(("fail", c.resource))


def test_order_respects_dependencies_and_keeps_declared_order_otherwise():
    w: dict = {}
    b, c = Box("b", w, "1"), Box("c", w, "1")
    a = Box("a", w, "1", after=(c,))
    assert [r.name for r in order([a, b, c])] == ["c", "a", "b"]


def test_order_by_kind_and_cycle_detection():
    w: dict = {}

    class Other(Box):
        kind = "other"

    x = Other("x", w, "1", after=(Box,))
    assert [r.id for r in order([x, Box("a", w, "1"), Box("b", w, "1")])] == [
        "box a", "box b", "other x"]
    p, q = Box("p", w, "1", after=(Ref(Box, "q"),)), Box("q", w, "1")
    q.after = (p,)
    with pytest.raises(FjordError, match="cycle"):
        order([p, q])


def test_plan_then_apply_then_plan_is_empty(ctx):
    w: dict = {"b": "0"}
    rs = [Box("a", w, "1"), Box("b", w, "1")]
    plan = make_plan(rs, ctx)
    assert [(c.resource, c.action) for c in plan.changes] == [("box a", "create"),
                                                             ("box b", "update")]
    rec = Recorder()
    done = apply(rs, ctx, rec)
    assert len(done) == 2 and w["a"] == w["b"] == "1"
    assert make_plan(rs, ctx).empty
    assert apply(rs, ctx, Recorder()) == []


def test_apply_stops_at_first_failure_and_rerun_continues(ctx):
    w: dict = {}
    bad = Box("b", w, "1", fail=True)
    rs = [Box("a", w, "1"), bad, Box("c", w, "1")]
    with pytest.raises(ApplyError) as exc:
        apply(rs, ctx, Recorder())
    assert "box b" in exc.value.message and "boom" in exc.value.message
    assert w["log"] == ["a"] and "c" not in w
    bad.fail = False
    done = apply(rs, ctx, Recorder())
    assert [c.resource for c in done] == ["box b", "box c"]


def test_apply_reads_afresh_after_each_change_and_only_then(ctx):
    """A driver's cache (here: a copy of the world) is reused by a run of resources that
    need nothing, and dropped after every change: a resource read after a change sees
    it, one read before sees the plan's reads."""

    class Snapshot:
        def __init__(self, world):
            self.world, self.copy, self.reads = world, None, 0

        def get(self, key):
            if self.copy is None:
                self.copy, self.reads = dict(self.world), self.reads + 1
            return self.copy.get(key)

        def forget(self):
            self.copy = None

    class Cached(Box):
        def changes(self, ctx):
            snap = ctx.driver("snap", lambda: Snapshot(self.world))
            if snap.get(self.name) == self.want:
                return []
            return [Change(self.id, "update", f"{self.name} = {self.want}", self._set)]

    w = {"a": "1", "b": "1", "d": "1"}
    boxes = [Cached("a", w, "1"), Cached("b", w, "1"), Cached("c", w, "1"),
             Cached("d", w, "1"), Cached("e", w, "1", after=(Ref(Box, "c"),))]
    make_plan(boxes, ctx)
    snap = ctx.drivers["snap"]
    assert snap.reads == 1                      # one read for the whole plan
    apply(boxes, ctx, Recorder())
    # a, b: the plan's read; c changed: read after it (convergence); d, e: that read
    # again, dropped after e's change and read for its convergence check
    assert w["log"] == ["c", "e"] and snap.reads == 3
    assert make_plan(boxes, ctx).empty


class Together(Box):
    """A concurrent resource whose change waits for its neighbours' at a barrier: it
    only gets through if they all run at the same time."""

    kind = "together"
    concurrent = True

    def __init__(self, name, world, barrier, fail=False):
        super().__init__(name, world, "1", fail=fail)
        self.barrier = barrier

    def _set(self, ctx):
        self.barrier.wait()
        super()._set(ctx)


def test_concurrent_neighbours_run_their_changes_at_the_same_time(ctx):
    import threading

    w: dict = {}
    barrier = threading.Barrier(3, timeout=10)
    group = [Together(n, w, barrier) for n in ("a", "b", "c")]
    rec = Recorder()
    done = apply([Box("first", w, "1"), *group, Box("last", w, "1")], ctx, rec)
    assert {c.resource for c in done} == {"box first", "together a", "together b",
                                          "together c", "box last"}
    assert w["log"][0] == "first" and w["log"][-1] == "last"   # the group in between
    assert make_plan(group, ctx).empty


def test_a_failure_in_a_concurrent_group_stops_after_the_others_finish(ctx):
    import threading

    w: dict = {}
    barrier = threading.Barrier(3, timeout=10)
    group = [Together("a", w, barrier), Together("b", w, barrier, fail=True),
             Together("c", w, barrier)]
    rec = Recorder()
    with pytest.raises(ApplyError) as exc:
        apply([*group, Box("after", w, "1")], ctx, rec)
    assert "together b" in str(exc.value) and "boom" in str(exc.value)
    assert sorted(c.resource for c in exc.value.done) == ["together a", "together c"]
    assert ("fail", "together b") in rec.events and "after" not in w
    # the next apply finishes the job
    group[1].fail = False
    group[1].barrier = threading.Barrier(1)
    apply([*group, Box("after", w, "1")], ctx, Recorder())
    assert w["b"] == "1" and w["after"] == "1"


def test_a_resource_that_does_not_converge_is_an_error(ctx):
    class Liar(Box):
        def _set(self, ctx):
            pass

    with pytest.raises(FjordError, match="did not converge"):
        apply([Liar("x", {}, "1")], ctx, Recorder())


def test_unreadable_state_is_reported_not_crashed_on(ctx):
    class Secret(Box):
        def changes(self, ctx):
            raise StateUnreadable("permission denied: /secret")

    plan = make_plan([Secret("s", {}, "1"), Box("a", {}, "1")], ctx)
    assert [u.resource for u in plan.unreadable] == ["box s"]
    assert plan.as_json()["unreadable"][0]["reason"].startswith("permission denied")
    assert len(plan.changes) == 1


def test_apply_converges_the_rest_past_an_unreadable_resource_then_fails(ctx):
    """An unreadable resource and what comes after it are left as they are; everything
    else converges; the apply ends in an error naming it."""

    class Secret(Box):
        def changes(self, ctx):
            raise StateUnreadable("a FIFO where a file should be")

    world: dict = {}
    secret = Secret("a", world, "1")
    following = Box("a-next", world, "1", after=(secret,))
    resources = [secret, following, Box("a-last", world, "1", after=(following,)),
                 Box("b", world, "1")]
    with pytest.raises(NotConverged) as caught:
        apply(resources, ctx, Recorder())
    assert world.get("log") == ["b"]
    assert [c.resource for c in caught.value.done] == ["box b"]
    assert "box a: cannot read its state: a FIFO" in caught.value.message
    assert "box a-next, box a-last" in caught.value.message


def test_apply_lock_refuses_a_second_apply(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    with apply_lock():
        import subprocess
        import sys

        code = ("from fjord.cli import install_environment\n"
                "from fjord.engine.apply import apply_lock\n"
                "install_environment()\n"
                "try:\n    apply_lock().__enter__()\nexcept Exception as e:\n"
                "    print(e); raise SystemExit(3)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"FJORD_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 3 and "another fjord apply is running" in out.stdout
    with apply_lock():  # released
        pass


def test_an_unknown_reference_is_an_error_not_dropped():
    """A typo in ``after`` used to be dropped silently, and the order with it."""
    from fjord.engine.order import dependency_map
    from fjord.host.services import Service
    from fjord.net.resources import Bridge

    w: dict = {}

    class Bridgee(Box):
        kind = "bridgee"

    with pytest.raises(FjordError, match="the kind 'bridgee', which is not a kind fjord knows"):
        order([Box("a", w, "1", after=(Bridgee,))])
    # a resource of a present kind that is not there
    with pytest.raises(FjordError, match="'box nope'.*there is no such box"):
        order([Box("a", w, "1", after=(Ref(Box, "nope"),)), Box("b", w, "1")])
    # a resource object that is not in the list
    with pytest.raises(FjordError, match="'box c'.*there is no such box"):
        order([Box("a", w, "1", after=(Box("c", w, "1"),)), Box("b", w, "1")])
    # a registered kind none of which is here (its layer left out with --only): fine
    a = Box("a", w, "1", after=(Bridge, Ref(Service, "libvirtd"), Ref(Service, "x")))
    assert order([a]) == [a]
    # but not when every layer is there (the catalogue checks that way)
    with pytest.raises(FjordError, match="'service libvirtd'.*there is no such service"):
        dependency_map([a], complete=True)


def test_a_string_in_after_is_refused():
    """Ids and kind names as strings were references once: now a TypeError, whether or
    not the string would name something."""
    w: dict = {}
    b = Box("b", w, "1")
    for text in ("box b", "box", "service libvirtd", "bridge"):
        with pytest.raises(TypeError, match=f"box a comes after '{text}', which is not a "
                           "reference"):
            order([Box("a", w, "1", after=(text,)), b])
    with pytest.raises(TypeError, match="not a reference"):
        order([Box("a", w, "1", after=(str,)), b])  # a class, but not a resource's


def test_references_as_objects_refs_and_kinds():
    w: dict = {}
    b, c = Box("b", w, "1"), Box("c", w, "1")
    for ref in (c, Ref(Box, "c")):
        assert [r.name for r in order([Box("a", w, "1", after=(ref,)), b, c])] == [
            "c", "a", "b"]
    assert [r.name for r in order([Box("a", w, "1", after=(Box,)), b, c])] == ["b", "c", "a"]


def test_every_reference_of_a_real_host_resolves_in_every_layer_selection():
    """The catalogue's resources, all layers or some (--only): each `after` resolves
    (order raises otherwise), and the registry knows every kind the catalogue makes."""
    from itertools import combinations
    from pathlib import Path

    from hosts import ON_BOOKWORM

    from fjord.config.desired import load
    from fjord.resources import LAYERS, all_resources, kinds, registry

    desired = load(str(Path(__file__).parents[2] / "examples" / "lab.yaml"), ON_BOOKWORM)
    assert desired.containers
    registered = kinds()
    for n in range(1, len(LAYERS) + 1):
        for only in combinations(LAYERS, n):
            resources = all_resources(desired, frozenset(only))
            assert order(resources)
            for r in resources:
                assert type(r) in registered[r.kind], r.id
    assert len({cls for _, cls in registry()}) == len(registry())


def test_the_lab_catalogue_keeps_its_order_and_dependencies(monkeypatch, state_dir):
    """examples/lab.yaml's resources (with a container out of the file, kept): the
    apply order, each with what it comes after, as reviewed (a changed `after` shows
    here as a diff; FJORD_REGENERATE=1 rewrites the golden file)."""
    from pathlib import Path
    from types import SimpleNamespace

    from goldens import check_golden
    from hosts import ON_BOOKWORM

    from fjord.config.desired import load
    from fjord.containers import rootfs
    from fjord.engine.order import dependency_map
    from fjord.host import cgroups
    from fjord.resources import all_resources

    monkeypatch.setattr(rootfs, "all_records", lambda base=None: [SimpleNamespace(name="old")])
    # as on a server fjord never gave cgroup v2 (not this machine's GRUB file, if it has one)
    monkeypatch.setattr(cgroups, "GRUB_FILE", "nonexistent/fjord-unit-test/fjord.cfg")
    desired = load(str(Path(__file__).parents[2] / "examples" / "lab.yaml"), ON_BOOKWORM)
    resources = all_resources(desired)
    deps = dependency_map(resources, complete=True)
    lines = ["# examples/lab.yaml, a kept container `old`: the apply order, each resource"
             " with what it comes after"]
    for r in order(resources):
        lines += [r.id, *(f"  after {d}" for d in deps[r.id])]
    text = "\n".join(lines).replace(str(state_dir), "$FJORD_STATE_DIR") + "\n"
    check_golden(Path(__file__).parent / "golden" / "engine", "lab-order.txt", text)


def test_apply_refuses_changes_that_differ_from_the_shown_plan(ctx):
    """Between the plan shown and the confirmation, someone changes the host: what
    would run is not what was confirmed, and nothing runs."""
    from dataclasses import replace

    from fjord.engine.apply import Shown, StalePlan

    class Diff(Box):
        def changes(self, ctx):
            return [replace(c, detail=f"{c.detail} (is {self.world.get(self.name)})")
                    for c in super().changes(ctx)]

    w: dict = {"b": "0"}
    rs2 = [Diff("a", w, "1"), Box("b", w, "1")]
    shown2 = Shown.of(make_plan(rs2, ctx))
    w["a"] = "9"  # changed by someone else after the plan was shown
    with pytest.raises(StalePlan) as exc:
        apply(rs2, ctx, Recorder(), shown=shown2)
    msg = exc.value.message
    assert msg.startswith("the host changed since the plan was shown: box a: shown: "
                          "create a = 1 (is None); now: update a = 1 (is 9)")
    assert msg.endswith("nothing was changed; run fjord plan again")
    assert w["a"] == "9" and w["b"] == "0" and "log" not in w
    assert exc.value.exit_code == 1
    # a change that was never shown is refused too
    rs = [Box("a", w, "1"), Box("b", w, "1")]
    shown = Shown.of(make_plan(rs, ctx))
    with pytest.raises(StalePlan, match="box c: not shown: create c = 1"):
        apply([*rs, Box("c", w, "1")], ctx, Recorder(), shown=shown)
    assert "log" not in w


def test_apply_holds_each_resource_to_the_shown_plan_while_it_runs(ctx):
    """The host changes after the confirmation, while apply runs: the resource read
    again right before its change differs, and apply stops there."""
    from fjord.engine.apply import Shown, StalePlan

    w: dict = {}

    class Meddler(Box):
        def _set(self, ctx):
            super()._set(ctx)
            self.world["c"] = "other"  # someone else, at the same time

    rs = [Meddler("a", w, "1"), Box("b", w, "1"), Box("c", w, "1")]
    shown = Shown.of(make_plan(rs, ctx))
    with pytest.raises(StalePlan) as exc:
        apply(rs, ctx, Recorder(), shown=shown)
    assert "box c: shown: create c = 1; now: update c = 1" in exc.value.message
    assert "applied 2 changes before this one" in exc.value.message
    assert w["log"] == ["a", "b"] and w["c"] == "other"


def test_apply_accepts_a_change_an_earlier_one_settled_and_one_that_follows_a_change(ctx):
    """A shown change that is no longer needed when its turn comes (an earlier change
    did it: libvirt's hook rebuilds the flows) is skipped; a resource that comes after
    a changed one may need something else than shown (a restart's reason)."""
    from fjord.engine.apply import Shown

    w: dict = {}

    class Settler(Box):
        def _set(self, ctx):
            super()._set(ctx)
            self.world["b"] = "1"  # settles b

    class Follower(Box):
        def changes(self, ctx):
            why = "a changed" if self.world.get("a") == "1" else "a will change"
            return [Change(self.id, "update", f"restart ({why})", self._set)] \
                if self.world.get(self.name) != self.want else []

    settler = Settler("a", w, "1")
    rs = [settler, Box("b", w, "1"), Follower("f", w, "1", after=(settler,))]
    p = make_plan(rs, ctx)
    assert [c.detail for c in p.changes] == ["a = 1", "b = 1", "restart (a will change)"]
    done = apply(rs, ctx, Recorder(), shown=Shown.of(p))
    assert [c.detail for c in done] == ["a = 1", "restart (a changed)"]
    assert w["log"] == ["a", "f"]
    assert make_plan(rs, ctx).empty


def test_a_fingerprint_is_what_plan_shows_not_the_function():
    a = Change("file /x", "update", "write /x", print, diff="-a\n+b\n")
    assert a.fingerprint == Change("file /x", "update", "write /x", len,
                                   diff="-a\n+b\n").fingerprint
    assert a.fingerprint != Change("file /x", "update", "write /x", print,
                                   diff="-a\n+c\n").fingerprint


def test_a_resource_whose_changes_carry_another_name_is_held_to_them(ctx):
    """The hosts block's changes are its file's ("file /etc/hosts", the resource is
    "hosts /etc/hosts"): shown, they run; changed since, they are refused."""
    from fjord.engine.apply import Shown, StalePlan

    class Named(Box):
        def changes(self, ctx):
            return [Change(f"file /{self.name}", c.action, c.detail, c.run)
                    for c in super().changes(ctx)]

    w: dict = {}
    rs = [Named("a", w, "1")]
    shown = Shown.of(make_plan(rs, ctx))
    assert [c.resource for c in apply(rs, ctx, Recorder(), shown=shown)] == ["file /a"]
    rs = [Named("a", w, "2")]
    shown = Shown.of(make_plan(rs, ctx))
    del w["a"]  # someone removed it: a create now, not the update shown
    with pytest.raises(StalePlan, match="box a: shown: update a = 2; now: create a = 2"):
        apply([Named("a", w, "2")], ctx, Recorder(), shown=shown)


def test_one_layer_alone_orders_in_a_fresh_interpreter():
    """`fjord check` plans the network layer alone: its references to the host layer's
    kinds (service openvswitch-switch) resolve without anything else imported."""
    import subprocess
    import sys

    code = ("from fjord.config.desired import load\n"
            "from fjord.engine.order import order\n"
            "from fjord.resources import network_resources\n"
            "order(network_resources(load('examples/lab.yaml')))\n")
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], timeout=120)
    assert out.returncode == 0, out.stderr
