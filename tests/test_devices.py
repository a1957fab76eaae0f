"""Teleop devices: raw input -> action mapping from synthetic key presses, pad snapshots and SpaceMouse HID reports
(deadzone, clipping, axis signs, gripper, marks, active flag), with no input library or hardware involved."""

import struct
import sys
import types

import numpy as np
import pytest
from gymnasium import spaces

from robot_rl.hil.devices import (
    ActionLayout,
    DeviceError,
    GamepadDevice,
    KeyboardDevice,
    SpaceMouseDevice,
    apply_deadzone,
    is_spacemouse,
    make_device,
    parse_spacemouse_report,
)

XYZ_G = ActionLayout(rotation=False, gripper=True)  # (dx, dy, dz, gripper)
FULL = ActionLayout(rotation=True, gripper=True)  # (dx, dy, dz, roll, pitch, yaw, gripper)


def test_layout_and_deadzone():
    assert [ActionLayout.from_dim(d).dim for d in (3, 4, 6, 7)] == [3, 4, 6, 7]
    assert ActionLayout.from_dim(4) == XYZ_G and ActionLayout.from_dim(7) == FULL
    with pytest.raises(DeviceError, match="3, 4, 6 or 7"):
        ActionLayout.from_dim(1)
    a = FULL.assemble(np.array([2.0, -3.0, 0.5, 0.1, 0.2, 0.3]), 1.0)
    assert a.dtype == np.float32 and a.tolist() == pytest.approx([1, -1, 0.5, 0.1, 0.2, 0.3, 1])
    assert XYZ_G.assemble(np.arange(6.0), -1.0).tolist() == [0, 1, 1, -1]  # rotation dropped, clipped
    np.testing.assert_allclose(apply_deadzone([0.05, -0.1, 0.55, -1.0, 3.0], 0.1), [0, 0, 0.5, -1, 1])
    np.testing.assert_allclose(apply_deadzone([0.05, -0.7], 0.0), [0.05, -0.7])


def test_keyboard_mapping():
    kb = KeyboardDevice(FULL, speed=0.8, precision=0.5, listen=False)
    kb.reset()  # episode start: gripper open
    st = kb.read()
    assert st.action.tolist() == [0, 0, 0, 0, 0, 0, -1] and not st.active and st.events == frozenset()
    kb.press("w")
    kb.press("A")  # upper case (Shift) is the same key
    kb.press("r")
    st = kb.read()
    assert st.action.tolist() == pytest.approx([0.8, 0.8, 0.8, 0, 0, 0, -1]) and st.active
    kb.press("shift_r")  # precision
    kb.press("s")  # opposite keys cancel
    kb.press("j")
    assert kb.read().action.tolist() == pytest.approx([0, 0.4, 0.4, 0, 0, 0.4, -1])
    for k in ("w", "a", "r", "s", "j", "Shift"):
        kb.release(k)
    assert not kb.read().active
    kb.press("f")
    kb.release("f")  # a tap shorter than one control period still moves one step
    st = kb.read()
    assert st.action[2] == pytest.approx(-0.8) and st.active
    assert kb.read().action[2] == 0
    kb.press("space")  # gripper toggle: close, and touching the gripper counts as active
    st = kb.read()
    assert st.action[-1] == 1 and st.active
    kb.press("space")  # auto-repeat of a held key toggles nothing
    kb.release("space")
    kb.press("space")
    assert kb.read().action[-1] == -1
    for k in ("enter", "y", "n", "backspace", "esc", "Return"):
        kb.press(k)
    assert kb.read().events == {"start", "success", "failure", "discard", "quit"}
    assert kb.read().events == frozenset()  # marks are edge-triggered and drained
    kb.sync_gripper(None)  # unknown state: hold
    assert kb.read().action[-1] == 0
    kb.sync_gripper(True)
    assert kb.read().action[-1] == 1


def test_keyboard_remap_rotationless_and_errors():
    kb = KeyboardDevice(ActionLayout(), keys={"x+": "up", "success": "enter", "start": "f1"}, listen=False)
    kb.press("up")
    kb.press("j")  # yaw key: no rotation dims in a 3-dim action, so not active either
    st = kb.read()
    assert st.action.tolist() == [1, 0, 0]
    kb.release("up")
    assert not kb.read().active
    kb.press("enter")
    kb.press("f1")
    assert kb.read().events == {"success", "start"}
    assert kb.help.startswith("keyboard: up/S x, A/D y, R/F z, hold shift") and "enter success" in kb.help
    with pytest.raises(ValueError, match="unknown command"):
        KeyboardDevice(XYZ_G, keys={"jump": "j"}, listen=False)
    with pytest.raises(ValueError, match="speed"):
        KeyboardDevice(XYZ_G, speed=1.5, listen=False)


def test_keyboard_without_display_names_the_fix(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("PYNPUT_BACKEND", raising=False)
    monkeypatch.delenv("PYNPUT_BACKEND_KEYBOARD", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(DeviceError, match="keyboard: no display.*DISPLAY"):
        KeyboardDevice(XYZ_G)


def pad(axes=(), buttons=(), hats=()):
    """An Xbox-layout snapshot: 6 axes (triggers at rest = -1), 11 buttons, 1 hat; overrides by index."""
    a = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0]
    for i, v in axes:
        a[i] = v
    b = [0] * 11
    for i in buttons:
        b[i] = 1
    h = [(0, 0)]
    for i, v in hats:
        h[i] = v
    return a, b, h


def test_gamepad_mapping():
    gp = GamepadDevice(FULL, deadzone=0.2, speed=1.0, connect=False)
    gp.reset()
    st = gp.update(*pad(axes=[(0, 0.1), (1, -0.15), (4, 0.19)]))  # stick noise inside the deadzone
    assert st.action.tolist() == [0, 0, 0, 0, 0, 0, -1] and not st.active and not st.events
    st = gp.update(*pad(axes=[(0, -1.0), (1, -0.6), (4, 1.0), (3, 0.6)], hats=[(0, (1, -1))]))
    # left stick up 0.6 -> +x (0.6-0.2)/0.8 = 0.5; stick left -> +y; right stick down -> -z; right stick right -> -yaw
    assert st.action.tolist() == pytest.approx([0.5, 1.0, -1.0, 1.0, -1.0, -0.5, -1]) and st.active
    st = gp.update(*pad(axes=[(0, 1.7)]))  # out-of-range input is clipped
    assert st.action[1] == -1.0
    st = gp.update(*pad(buttons=[5]))  # RB closes
    assert st.action[-1] == 1 and st.active
    assert gp.update(*pad(buttons=[5])).action[-1] == 1  # held: no new edge, stays closed (and active)
    assert gp.update(*pad(buttons=[4])).action[-1] == -1  # LB opens
    gp.update(*pad())
    assert gp.update(*pad(buttons=[0])).action[-1] == 1  # A toggles
    st = gp.update(*pad(buttons=[0, 7, 3]))  # held A: no toggle; Start and Y pressed
    assert st.action[-1] == 1 and st.events == {"start", "success"}
    assert gp.update(*pad(buttons=[0, 7, 3])).events == frozenset()  # still held: no repeat
    st = gp.update(*pad(), pressed=[2, 1, 6])  # presses seen in the event queue, already released
    assert st.events == {"failure", "discard", "quit"} and st.active


def test_gamepad_remap_and_errors():
    gp = GamepadDevice(
        XYZ_G,
        deadzone=0.0,
        speed=0.5,
        precision=0.5,
        connect=False,
        axes={"x": "a3", "z": None},
        buttons={"success": [8, 9], "precision": 4},
    )
    st = gp.update(*pad(axes=[(3, 0.8), (4, -1.0)]))
    assert st.action.tolist() == pytest.approx([0.4, 0, 0, 0])  # z unmapped
    st = gp.update(*pad(axes=[(3, 0.8)], buttons=[4, 9]))
    assert st.action.tolist() == pytest.approx([0.2, 0, 0, -1]) and st.events == {"success"}  # LB: precision+open
    with pytest.raises(ValueError, match="axis source"):
        GamepadDevice(XYZ_G, axes={"x": "stick1"}, connect=False)
    with pytest.raises(ValueError, match="unknown command"):
        GamepadDevice(XYZ_G, buttons={"fire": 1}, connect=False)


def report(rid, *values, fmt="<3h"):
    return bytes([rid]) + struct.pack(fmt, *values)


def test_spacemouse_reports():
    assert parse_spacemouse_report(report(1, 10, -20, 350))["translation"].tolist() == [10, -20, 350]
    both = parse_spacemouse_report(report(1, 1, 2, 3, -4, -5, -6, fmt="<6h"))  # newer models: 12-byte report 1
    assert both["translation"].tolist() == [1, 2, 3] and both["rotation"].tolist() == [-4, -5, -6]
    assert parse_spacemouse_report(report(2, -1, 0, 32767))["rotation"].tolist() == [-1, 0, 32767]
    assert parse_spacemouse_report(bytes([3, 0b10, 0]))["buttons"] == 2
    assert parse_spacemouse_report(bytes([1, 2])) == {} and parse_spacemouse_report(b"") == {}
    assert parse_spacemouse_report(bytes([23, 1, 2, 3])) == {}  # other reports (battery, ...) ignored


def test_spacemouse_mapping():
    sm = SpaceMouseDevice(FULL, deadzone=0.1, full_scale=350, translation_scale=1.0, rotation_scale=2.0, connect=False)
    sm.reset()
    sm.feed(report(1, 20, -30, 10))  # all inside the 35-count deadzone
    st = sm.state()
    assert st.action.tolist() == [0, 0, 0, 0, 0, 0, -1] and not st.active
    # cap pushed away (y = -350) and right (x = +192.5), lifted (z = -350); default axes: x=-y, y=-x, z=-z
    sm.feed(report(1, 192, -350, -350))
    sm.feed(report(2, 0, 70, -700))  # rotation gain 2, clipped; roll=-ry, pitch=-rx, yaw=-rz
    st = sm.state()
    exp_y = -((192 / 350 - 0.1) / 0.9)
    exp_roll = -2 * ((70 / 350 - 0.1) / 0.9)
    assert st.action.tolist() == pytest.approx([1.0, exp_y, 1.0, exp_roll, 0.0, 1.0, -1], abs=1e-6) and st.active
    sm.feed(report(1, 0, 0, 0, 0, 0, 0, fmt="<6h"))  # released (combined report zeroes rotation too)
    assert not sm.state().active
    sm.feed(bytes([3, 0b01]))  # left button: close
    st = sm.state()
    assert st.action[-1] == 1 and st.active
    sm.feed(bytes([3, 0b00]))
    sm.feed(bytes([3, 0b10]))  # right button: open
    assert sm.state().action[-1] == -1
    sm.feed(bytes([3, 0b11]))  # left goes down again while right is held: close
    assert sm.state().action[-1] == 1


def test_spacemouse_remap_marks_and_errors():
    sm = SpaceMouseDevice(
        XYZ_G,
        deadzone=0.0,
        axes={"x": "x", "y": "y", "z": "-rz"},
        buttons={"gripper_close": None, "gripper_open": None, "start": 0, "success": 1},
        connect=False,
    )
    sm.feed(report(1, 35, 70, 0, 0, 0, 175, fmt="<6h"))
    sm.feed(bytes([3, 0b11]))
    st = sm.state()
    assert st.action.tolist() == pytest.approx([0.1, 0.2, -0.5, 0]) and st.events == {"start", "success"}
    assert sm.state().events == frozenset()
    with pytest.raises(ValueError, match="'q' is not one of"):
        SpaceMouseDevice(XYZ_G, axes={"x": "-q"}, connect=False)
    assert is_spacemouse({"vendor_id": 0x256F, "product_id": 0xC635})
    assert is_spacemouse({"vendor_id": 0x046D, "product_id": 0xC626})
    assert not is_spacemouse({"vendor_id": 0x046D, "product_id": 0xC52B, "product_string": "USB Receiver"})


class _Env:
    """Just enough env for make_device: a 4-dim action space and a scripted expert."""

    action_space = spaces.Box(-1, 1, (4,), np.float32)
    rotation, use_gripper = False, True

    @property
    def unwrapped(self):
        return self

    def expert_action(self, noise=0.0):
        return np.array([0.1, 0.2, 0.3, 1.0 + noise], np.float32)


def test_make_device_and_scripted():
    dev = make_device("scripted", _Env())
    assert not dev.is_human and dev.name == "scripted"
    st = dev.read()
    assert st.action.tolist() == pytest.approx([0.1, 0.2, 0.3, 1.0]) and "start" in st.events and st.active
    with pytest.raises(ValueError, match="valid choices: keyboard, gamepad, spacemouse, scripted"):
        make_device("joystick", _Env())
    with pytest.raises(ValueError, match="device gamepad has no setting foo; valid: index, deadzone"):
        make_device("gamepad", _Env(), foo=1)
    kb = make_device("keyboard", _Env(), listen=False, speed=0.5)
    assert isinstance(kb, KeyboardDevice) and kb.layout == XYZ_G and kb.speed == 0.5


# ---- the glue between each device and its library, with the library replaced by a stand-in (no hardware here)
class FakeJoystick:
    def __init__(self, index):
        self.axes, self.buttons, self.hats = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0], [0] * 11, [(0, 0)]

    def init(self):
        pass

    def get_instance_id(self):
        return 0

    def get_name(self):
        return "fake pad"

    def get_numaxes(self):
        return len(self.axes)

    def get_axis(self, i):
        return self.axes[i]

    def get_numbuttons(self):
        return len(self.buttons)

    def get_button(self, i):
        return self.buttons[i]

    def get_numhats(self):
        return len(self.hats)

    def get_hat(self, i):
        return self.hats[i]


def fake_pygame(count):
    ns = types.SimpleNamespace
    pads = [FakeJoystick(i) for i in range(count)]
    queue = []
    pg = ns(
        JOYBUTTONDOWN=1539,
        JOYDEVICEREMOVED=1542,
        queue=queue,
        pads=pads,
        display=ns(init=lambda: None, quit=lambda: None),
        joystick=ns(init=lambda: None, quit=lambda: None, get_count=lambda: count, Joystick=lambda i: pads[i]),
        event=ns(get=lambda: [queue.pop(0) for _ in range(len(queue))]),
        quit=lambda: None,
    )
    return pg


def test_gamepad_glue(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)
    with pytest.raises(DeviceError, match=r"gamepad: the pygame package is missing: pip install 'robot-rl\[teleop\]'"):
        GamepadDevice(XYZ_G)
    monkeypatch.setitem(sys.modules, "pygame", fake_pygame(0))
    with pytest.raises(DeviceError, match="gamepad: no game controller found: plug it in"):
        GamepadDevice(XYZ_G)
    pg = fake_pygame(1)
    monkeypatch.setitem(sys.modules, "pygame", pg)
    with pytest.raises(DeviceError, match="index=1 but only 1"):
        GamepadDevice(XYZ_G, index=1)
    gp = GamepadDevice(XYZ_G)
    gp.reset()
    pg.pads[0].axes[1] = -1.0  # left stick fully up
    pg.queue.append(types.SimpleNamespace(type=pg.JOYBUTTONDOWN, button=7, instance_id=0))  # Start tapped
    st = gp.read()
    assert st.action.tolist() == [1, 0, 0, -1] and st.events == {"start"} and st.active
    pg.pads[0].buttons[5] = 1  # RB held (no event seen): still a press
    assert gp.read().action[-1] == 1
    pg.queue.append(types.SimpleNamespace(type=pg.JOYDEVICEREMOVED, instance_id=0))
    with pytest.raises(DeviceError, match="unplugged"):
        gp.read()
    gp.close()


class FakeHidDevice:
    reports: list = []
    opened = None

    def open_path(self, path):
        FakeHidDevice.opened = path

    def set_nonblocking(self, flag):
        pass

    def read(self, size):
        return list(self.reports.pop(0)) if self.reports else []

    def close(self):
        pass


def test_spacemouse_glue(monkeypatch):
    monkeypatch.setitem(sys.modules, "hid", None)
    with pytest.raises(DeviceError, match="spacemouse: the hidapi package is missing"):
        SpaceMouseDevice(XYZ_G)
    mouse = {"vendor_id": 0x046D, "product_id": 0xC077, "product_string": "USB Optical Mouse", "path": b"/dev/hidraw0"}
    listed = [mouse]
    monkeypatch.setitem(sys.modules, "hid", types.SimpleNamespace(enumerate=lambda: listed, device=FakeHidDevice))
    with pytest.raises(DeviceError, match="no 3Dconnexion SpaceMouse found.*plug it in.*udev"):
        SpaceMouseDevice(XYZ_G)
    listed += [
        {"vendor_id": 0x256F, "product_id": 0xC635, "usage_page": 12, "usage": 1, "path": b"/dev/hidraw2"},
        {"vendor_id": 0x256F, "product_id": 0xC635, "usage_page": 1, "usage": 8, "path": b"/dev/hidraw3"},
    ]
    FakeHidDevice.reports = [report(1, 0, -350, 0), report(2, 0, 0, 0), bytes([3, 1])]
    sm = SpaceMouseDevice(XYZ_G)
    assert FakeHidDevice.opened == b"/dev/hidraw3"  # the multi-axis interface
    st = sm.read()  # drains all three reports
    assert st.action.tolist() == [1, 0, 0, 1] and st.active and not FakeHidDevice.reports
    assert sm.read().action.tolist() == [1, 0, 0, 1]  # no new report: the cap is still pushed
    sm.close()


def test_keyboard_glue(monkeypatch):
    made = []

    class Listener:
        def __init__(self, on_press, on_release):
            self.on_press, self.on_release, self.daemon, self.stopped = on_press, on_release, False, False
            made.append(self)

        def start(self):
            pass

        def wait(self):
            pass

        def stop(self):
            self.stopped = True

    pynput = types.ModuleType("pynput")
    pynput.keyboard = types.SimpleNamespace(Listener=Listener)
    monkeypatch.setitem(sys.modules, "pynput", pynput)
    monkeypatch.setenv("DISPLAY", ":0")
    kb = KeyboardDevice(XYZ_G)
    (listener,) = made
    listener.on_press(types.SimpleNamespace(char="W"))
    listener.on_press(types.SimpleNamespace(char=None, name="space"))
    listener.on_press(types.SimpleNamespace(name="enter"))
    listener.on_press(types.SimpleNamespace(vk=65027))  # a key with no name: ignored
    st = kb.read()
    assert st.action.tolist() == [1, 0, 0, 1] and st.events == {"start"}
    listener.on_release(types.SimpleNamespace(char="w"))
    assert kb.read().action.tolist() == [0, 0, 0, 1]
    kb.close()
    assert listener.stopped
    monkeypatch.setitem(sys.modules, "pynput", None)
    with pytest.raises(DeviceError, match="keyboard: the pynput package is missing"):
        KeyboardDevice(XYZ_G)
