"""The fake carla (test/driving/fake_carla.py) held against the installed carla 0.9.16 client.

The bridge's tests run over the fake, so a fake that differs from the real client hides bugs
(``Response.has_error`` read as an attribute passed against a fake with a bool attribute).
For every fake class and the real class it stands for (``fake_carla.REAL``):

- each public name the fake defines exists on the real class, with the same kind: a method
  (a Boost.Python function) or a property;
- each fake method takes the real method's parameters (names in order, as the real
  docstring's signature gives them; defaults only where the real one has them) and returns
  the same plain type (bool, int, float, str, None) where the real one returns one;
- the fakes keep their own state private (no public instance attributes).

Where the real behaviour cannot run here (no server), the fake's is checked against what the
LibCarla sources say: destroy() returns False and does not raise on a dead server,
get_actors(ids) answers from a cache that keeps destroyed actors, has_error is a method.
"""

from __future__ import annotations

import inspect
import re
import time
from typing import Any

import pytest

carla = pytest.importorskip("carla")

import fake_carla as fake  # noqa: E402

from dsp_driving.driving.server_process import ServerProcess  # noqa: E402

BOOST_FUNCTION = type(carla.Actor.destroy)
SIGNATURE = re.compile(r"^(\w+)\((.*)\) -> (\S+) :$", re.MULTILINE)
PARAMETER = re.compile(r"\(([\w:]+)\)(\w+)")
PLAIN = {"bool", "int", "float", "str", "None"}
DUNDERS = ("__int__", "__float__", "__str__", "__iter__", "__len__", "__getitem__")


def public_names(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ if klass is not object
            for name in vars(klass) if not name.startswith("_")}


def kind(cls: type, name: str) -> str:
    value = inspect.getattr_static(cls, name)
    if isinstance(value, property):
        return "property"
    if isinstance(value, BOOST_FUNCTION) or inspect.isfunction(value):
        return "method"
    return f"constant ({type(value).__name__})"


def real_signatures(cls: type, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """Each overload: [(parameter, optional)] without self, and the return type."""
    value = inspect.getattr_static(cls, name)
    if inspect.isfunction(value):  # a Python class (ServerProcess)
        params = list(inspect.signature(value).parameters.values())[1:]
        ret = inspect.signature(value).return_annotation
        return [([(p.name, p.default is not p.empty) for p in params], str(ret))]
    out = []
    for match in SIGNATURE.finditer(value.__doc__ or ""):
        args = match.group(2)
        params = [(p.group(2), "[" in args[:p.start()]) for p in PARAMETER.finditer(args)]
        out.append((params[1:], match.group(3)))
    assert out, f"no signature in the docstring of {cls.__name__}.{name}"
    return out


def accepts(params: list[inspect.Parameter], real: list[tuple[str, bool]]) -> bool:
    """Whether a real overload takes exactly these positional parameters, by these names."""
    if len(params) > len(real) or any(not optional for _, optional in real[len(params):]):
        return False
    return all(mine.kind in (mine.POSITIONAL_ONLY, mine.POSITIONAL_OR_KEYWORD)
               and (re.fullmatch(r"arg\d+", name) or mine.name == name)  # argN: unnamed
               for mine, (name, _) in zip(params, real))


def fitting(params: list[inspect.Parameter], overloads: list[tuple[list[tuple[str, bool]], str]]
            ) -> list[str]:
    """The return types of the overloads taking every call the fake takes (with its optional
    parameters given or not); empty when some such call fits no real overload."""
    required = sum(p.default is p.empty for p in params)
    for count in range(required, len(params) + 1):
        if not any(accepts(params[:count], real) for real, _ in overloads):
            return []
    return [ret for real, ret in overloads if accepts(params, real)]


def contract_errors(fake_cls: type, real_cls: type) -> list[str]:
    """What makes ``fake_cls`` differ from ``real_cls`` (empty: none)."""
    errors = []
    for name in sorted(public_names(fake_cls)):
        where = f"{fake_cls.__name__}.{name} vs {real_cls.__name__}.{name}"
        if not hasattr(real_cls, name):
            errors.append(f"{where}: the real class has no {name}")
            continue
        mine, theirs = kind(fake_cls, name), kind(real_cls, name)
        if mine != theirs:
            errors.append(f"{where}: a {mine} on the fake, a {theirs} on the real class")
            continue
        if mine != "method":
            continue
        func = inspect.getattr_static(fake_cls, name)
        params = list(inspect.signature(func).parameters.values())[1:]
        overloads = real_signatures(real_cls, name)
        returned = fitting(params, overloads)
        if not returned:
            errors.append(f"{where}: parameters {[p.name for p in params]} fit no real "
                          f"overload {[[n for n, _ in real] for real, _ in overloads]}")
            continue
        returns = str(func.__annotations__.get("return"))
        plain = [ret for ret in returned if ret in PLAIN]
        if plain and returns not in plain:
            errors.append(f"{where}: returns {returns}, the real one {plain[0]}")
    for dunder in DUNDERS:
        if dunder in vars(fake_cls) and not hasattr(real_cls, dunder):
            errors.append(f"{fake_cls.__name__}.{dunder}: the real class has none")
    return errors


@pytest.fixture
def samples() -> dict[type, Any]:
    """One instance of every fake, made through the fake's own API."""
    server = fake.FakeServer()
    client = fake.FakeClient(server, "127.0.0.1", 2000)
    world = client.get_world()
    library = world.get_blueprint_library()
    blueprint = library.filter("vehicle.tesla.model3")[0]
    vehicle = world.try_spawn_actor(blueprint, carla.Transform())
    sensor = world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(),
                               attach_to=vehicle)
    spawn = fake.FakeSpawnActor(blueprint, carla.Transform())
    marking = fake.FakeLaneMarking(carla.LaneMarkingType.Solid)
    return {fake.FakeAttribute: blueprint.get_attribute("number_of_wheels"),
            fake.FakeBlueprint: blueprint, fake.FakeLibrary: library,
            fake.FakeActor: vehicle, fake.FakeVehicle: vehicle, fake.FakeSensor: sensor,
            fake.FakeCollisionEvent: fake.FakeCollisionEvent(1, None, carla.Vector3D()),
            fake.FakeLaneInvasionEvent: fake.FakeLaneInvasionEvent(1, [marking]),
            fake.FakeLaneMarking: marking, fake.FakeTM: client.get_trafficmanager(8000),
            fake.FakeWorld: world, fake.FakeClient: client, fake.FakeSpawnActor: spawn,
            fake.FakeResponse: client.apply_batch_sync([spawn])[0],
            fake.FakeProcess: fake.FakeProcess(server)}


@pytest.mark.parametrize("fake_cls", list(fake.REAL), ids=lambda c: c.__name__)
def test_every_fake_name_exists_on_the_real_class_with_the_same_kind(fake_cls: type) -> None:
    assert contract_errors(fake_cls, fake.REAL[fake_cls]) == []


def test_the_fake_server_process_matches_server_process() -> None:
    assert contract_errors(fake.FakeProcess, ServerProcess) == []


def test_fakes_keep_their_state_private(samples: dict[type, Any]) -> None:
    assert set(samples) == {*fake.REAL, fake.FakeProcess}
    public = {cls.__name__: sorted(n for n in vars(obj) if not n.startswith("_"))
              for cls, obj in samples.items()}
    assert public == {cls.__name__: [] for cls in samples}


def test_the_check_catches_a_method_the_real_class_lacks_or_a_changed_kind() -> None:
    class ExtraMethod(fake.FakeResponse):
        def is_ok(self) -> bool:
            return True

    class MethodAsProperty(fake.FakeResponse):
        @property
        def has_error(self) -> bool:  # what the bridge once assumed
            return False

    class PropertyAsMethod(fake.FakeTM):
        def get_port(self, extra: int) -> int:  # a parameter the real one lacks
            return extra

    class WrongReturn(fake.FakeVehicle):
        def destroy(self) -> None:  # the real one returns bool
            return None

    assert contract_errors(ExtraMethod, carla.command.Response) == [
        "ExtraMethod.is_ok vs Response.is_ok: the real class has no is_ok"]
    assert contract_errors(MethodAsProperty, carla.command.Response) == [
        "MethodAsProperty.has_error vs Response.has_error: a property on the fake, a method "
        "on the real class"]
    assert "fit no real overload" in contract_errors(PropertyAsMethod, carla.TrafficManager)[0]
    assert contract_errors(WrongReturn, carla.Vehicle) == [
        "WrongReturn.destroy vs Vehicle.destroy: returns None, the real one bool"]


def test_the_fake_module_exposes_real_names_and_real_values() -> None:
    module = fake.fake_module(fake.FakeServer())
    for name, value in vars(module).items():
        assert hasattr(carla, name), name
        if name not in ("Client", "command"):
            assert value is getattr(carla, name)
    for name, value in vars(module.command).items():
        assert hasattr(carla.command, name), name
        if name != "SpawnActor":
            assert value is getattr(carla.command, name)


# ---- behaviour the real client has (LibCarla 0.9.16), held by the fake ------------------------


def test_response_has_error_is_a_method_so_reading_it_as_an_attribute_is_always_true() -> None:
    assert isinstance(inspect.getattr_static(carla.command.Response, "has_error"),
                      BOOST_FUNCTION)
    assert isinstance(inspect.getattr_static(carla.command.Response, "error"), property)
    ok, failed = fake.FakeResponse(5), fake.FakeResponse(0, fake.NOT_FOUND)
    assert (ok.has_error(), failed.has_error(), failed.error) == (False, True, fake.NOT_FOUND)
    assert bool(ok.has_error) is True  # a bound method: the bug this contract prevents


def test_destroy_returns_false_after_the_time_out_on_a_dead_server() -> None:
    # Real: Actor::Destroy -> Client::DestroyActor, which catches the TimeoutException and
    # returns false (LibCarla/source/carla/client/detail/Client.cpp); the docstring says bool.
    assert carla.Actor.destroy.__doc__.split("\n")[1].endswith("-> bool :")
    server = fake.FakeServer()
    client = fake.FakeClient(server, "127.0.0.1", 2000)
    client.set_timeout(0.2)
    world = client.get_world()
    car = world.try_spawn_actor(world.get_blueprint_library().filter("vehicle.audi.tt")[0],
                                carla.Transform())
    server.down_for = 1
    started = time.monotonic()
    assert car.destroy() is False
    assert time.monotonic() - started >= 0.2 and car.id in server.actors
    server.refuse_destroy[car.id] = 1
    assert car.destroy() is False  # refused: at once
    assert car.destroy() is True and car.id not in server.actors
    with pytest.raises(RuntimeError, match="destroyed actor"):
        car.destroy()  # the handle itself is spent (EpisodeProxy::Lock)


def test_get_actors_by_id_answers_from_a_cache_that_keeps_destroyed_actors() -> None:
    # Real: Episode::GetActorsById asks the server only for ids missing from its cache.
    server = fake.FakeServer()
    client = fake.FakeClient(server, "127.0.0.1", 2000)
    world = client.get_world()
    spawn = fake.FakeSpawnActor(world.get_blueprint_library().filter("vehicle.audi.tt")[0],
                                carla.Transform())
    (response,) = client.apply_batch_sync([spawn])
    car_id = response.actor_id
    world.tick()
    assert [a.id for a in world.get_actors([car_id])] == [car_id]
    (gone,) = client.apply_batch_sync([carla.command.DestroyActor(car_id)])
    assert not gone.has_error() and car_id not in server.actors
    assert [a.id for a in world.get_actors([car_id])] == [car_id]  # still "there"
    assert [a.id for a in world.get_actors()] == [car_id]  # the last tick had it
    world.tick()
    assert world.get_actors() == []  # the next tick does not
    (again,) = client.apply_batch_sync([carla.command.DestroyActor(car_id)])
    assert again.error == "unable to destroy actor: not found"


def test_a_handle_of_an_earlier_episode_raises() -> None:
    server = fake.FakeServer()
    client = fake.FakeClient(server, "127.0.0.1", 2000)
    world = client.get_world()
    car = world.try_spawn_actor(world.get_blueprint_library().filter("vehicle.audi.tt")[0],
                                carla.Transform())
    new_world = client.reload_world(False)
    assert new_world.id == world.id + 1
    with pytest.raises(RuntimeError, match="expired episode"):
        car.destroy()
    with pytest.raises(RuntimeError, match="expired episode"):
        world.tick()


def test_is_alive_is_a_property_of_the_last_snapshot_not_used_by_the_bridge() -> None:
    assert isinstance(inspect.getattr_static(carla.Actor, "is_alive"), property)
    assert "is_alive" not in public_names(fake.FakeActor)


def test_the_real_client_values_the_fake_relies_on() -> None:
    assert carla.Client("127.0.0.1", 1).get_client_version() == fake.CLIENT_VERSION
    assert carla.command.FutureActor == 0
    autopilot = carla.command.SetAutopilot(carla.command.FutureActor, True, 8003)
    assert (autopilot.actor_id, autopilot.enabled, autopilot.tm_port) == (0, True, 8003)
    assert carla.command.DestroyActor(17).actor_id == 17
    for cls in (carla.command.Response, carla.LaneMarking, carla.CollisionEvent):
        with pytest.raises(RuntimeError, match="cannot be instantiated"):
            cls()  # only a server makes these: hence their fakes
