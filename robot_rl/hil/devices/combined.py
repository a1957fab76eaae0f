"""Two devices as one: motion from one, marks from it and from others (a SpaceMouse with marks from the keyboard)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robot_rl.hil.devices.base import DeviceState, TeleopDevice


class CombinedDevice(TeleopDevice):
    """Motion (action, active, gripper) from one device, marks from it and from others.

    E.g. a SpaceMouse (two buttons, both used for the gripper) with start/success/... from the keyboard.
    """

    def __init__(self, motion: TeleopDevice, marks: Sequence[TeleopDevice]):
        super().__init__(motion.layout)
        self.motion, self.marks = motion, list(marks)
        self.name, self.is_human = motion.name, motion.is_human

    def read(self) -> DeviceState:
        st = self.motion.read()
        events = set(st.events)
        for dev in self.marks:
            events |= dev.read().events
        return DeviceState(st.action, st.active, frozenset(events))

    def reset(self) -> None:
        self.motion.reset()
        for dev in self.marks:
            dev.reset()

    def sync_gripper(self, closed: bool | None) -> None:
        self.motion.sync_gripper(closed)

    def observe(self, obs: Mapping[str, np.ndarray] | None, proposed_action: np.ndarray | None) -> None:
        self.motion.observe(obs, proposed_action)

    @property
    def help(self) -> str:
        marks = "; ".join(d.help.split(" | ")[-1] for d in self.marks)
        return f"{self.motion.help} | marks from {'/'.join(d.name for d in self.marks)}: {marks}"

    def close(self) -> None:
        for dev in [self.motion, *self.marks]:
            dev.close()
