"""Scripted experts: closed-loop state machines that read the simulator and output 7-D actions.

Every expert has the policy contract of gr2-sim: ``reset()`` and ``select_action(obs) -> (7,) float32``.
Each step it re-reads the object poses, so it recovers from its own action noise and from slips (a
dropped cube sends it back to the approach phase). ``noise`` adds Gaussian noise of that standard
deviation to every action (then clipped to [-1, 1]): the stored demonstration is what was executed.
"""

from __future__ import annotations

import numpy as np

from envs.base import MAX_DPOS, MAX_DROT, wrap_angle
from envs.objects import CUBE_HALF
from envs.tool_pull import HOOK_HALF, SHAFT_HALF, TOOL_YAW

OPEN, CLOSED = -1.0, 1.0
HOVER = 0.09  # metres above an object before descending on it


class ScriptedExpert:
    """Base class: a phase counter, a proportional move-to controller and action noise."""

    def __init__(self, env, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise!r}")
        self.env = env.unwrapped
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.counter = 0

    def select_action(self, obs=None) -> np.ndarray:
        action = np.asarray(self.plan(), dtype=np.float64)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def plan(self) -> np.ndarray:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def move(self, target, grip: float, yaw: float | None = None, speed: float = 1.0) -> np.ndarray:
        """Action that moves the fingertip centre toward ``target`` (m) and the yaw toward ``yaw`` (rad).

        It also levels the jaw (undoes roll and pitch): with action noise they drift, and a tilted jaw
        presses one fingertip into the table.
        """
        action = np.zeros(7)
        action[:3] = np.clip((np.asarray(target) - self.env.tcp_pos) / MAX_DPOS, -speed, speed)
        rot = self.env.data.body("gripper").xmat.reshape(3, 3)
        roll, pitch = np.arctan2(rot[2, 1], rot[2, 2]), -np.arcsin(np.clip(rot[2, 0], -1.0, 1.0))
        action[3:5] = np.clip(-np.array([roll, pitch]) / MAX_DROT, -1.0, 1.0)
        if yaw is not None:
            action[5] = np.clip(wrap_angle(yaw - self.env.gripper_yaw) / MAX_DROT, -1.0, 1.0)
        action[6] = grip
        return action

    def near(self, target, tol: float, axes=slice(0, 3)) -> bool:
        return bool(np.linalg.norm((np.asarray(target) - self.env.tcp_pos)[axes]) < tol)

    def nearest_yaw(self, base: float, symmetry: int) -> float:
        """Of the ``symmetry`` yaws ``base + k * 2 pi / symmetry`` (equivalent for the grip), the one nearest the
        gripper's current yaw: the shortest turn."""
        options = [wrap_angle(base + k * 2 * np.pi / symmetry) for k in range(symmetry)]
        return min(options, key=lambda y: abs(wrap_angle(y - self.env.gripper_yaw)))

    def grasp_yaw(self, body: str) -> float:
        """The gripper yaw, among the cube's four symmetric faces, closest to the current yaw."""
        return self.nearest_yaw(self.env.body_yaw(body), 4)

    def holding(self, body: str) -> bool:
        pos = self.env.body_pos(body)
        return bool(np.linalg.norm(pos - self.env.tcp_pos) < 0.03 and self.env.gripper_opening > 0.2)

    def pick_and_place(self, body: str, place_xy, place_z: float) -> np.ndarray:
        """The shared grasp-carry-release routine (PickPlace, Stack, Rope)."""
        pos = self.env.body_pos(body)
        yaw = self.grasp_yaw(body) if self.phase < 3 else None
        above = np.array([pos[0], pos[1], pos[2] + HOVER])
        if self.phase == 0:  # open and hover above the object, aligned with it
            if self.near(above, 0.012, slice(0, 2)) and abs(wrap_angle(yaw - self.env.gripper_yaw)) < 0.06:
                self.phase = 1
            return self.move(above, OPEN, yaw)
        if self.phase == 1:  # descend around it
            grasp = np.array([pos[0], pos[1], max(pos[2], 0.015)])
            if not self.near(above, 0.03, slice(0, 2)):
                self.phase = 0
            if self.near(grasp, 0.008):
                self.phase, self.counter = 2, 0
            return self.move(grasp, OPEN, yaw, speed=0.7)
        if self.phase == 2:  # close the jaw
            self.counter += 1
            if self.counter >= 3:
                self.phase = 3
            return self.move(self.env.tcp_pos, CLOSED, yaw)
        if not self.holding(body):  # dropped it: start over
            self.phase = 0
            return self.move(self.env.tcp_pos + [0, 0, 0.03], OPEN)
        carry_z = max(place_z + 0.04, 0.10)
        if self.phase == 3:  # lift
            if self.env.tcp_pos[2] > carry_z - 0.02:
                self.phase = 4
            return self.move([*self.env.tcp_pos[:2], carry_z], CLOSED)
        if self.phase == 4:  # carry
            target = np.array([*place_xy, carry_z])
            if self.near(target, 0.01, slice(0, 2)):
                self.phase = 5
            return self.move(target, CLOSED)
        # phase 5: lower and release
        target = np.array([*place_xy, place_z])
        if self.near(target, 0.008):
            return self.move(target, OPEN)
        return self.move(target, CLOSED, speed=0.6)


class ReachExpert(ScriptedExpert):
    """Fly above the named cube (clear of the others), then come down onto it."""

    def plan(self) -> np.ndarray:
        goal = self.env.goal_point() + [0.0, 0.0, 0.005]
        if not self.near(goal, 0.015, slice(0, 2)):
            goal = goal + [0.0, 0.0, 0.05]
        return self.move(goal, OPEN, speed=0.5)


class PushExpert(ScriptedExpert):
    """Lift, line up behind the cube opposite the target, lower, push; re-line-up if it drifts."""

    def push_yaw(self, direction: np.ndarray) -> float:
        """The yaw that puts the closed jaw's flat face across ``direction``, of the two (the jaw is symmetric
        under a half turn) the one nearer the current yaw: at most a quarter turn, and one turning direction
        for nearly all scenes (a full-circle target made half of them turn either way near +-180 degrees,
        which a regression policy averages to no turn)."""
        return self.nearest_yaw(float(np.arctan2(direction[1], direction[0]) + np.pi / 2), 2)

    def plan(self) -> np.ndarray:
        cube, target = self.env.body_pos("cube")[:2], self.env.body_pos("target")[:2]
        to_target = target - cube
        dist = np.linalg.norm(to_target)
        d = to_target / max(dist, 1e-6)
        behind = cube - d * (CUBE_HALF + 0.035)
        low = 0.015
        if self.phase == 0:  # straight up if low, then above the pre-push point
            if self.env.tcp_pos[2] < 0.05:
                return self.move([*self.env.tcp_pos[:2], HOVER], CLOSED)
            goal = np.array([*behind, HOVER])
            yaw = self.push_yaw(d)
            if self.near(goal, 0.012, slice(0, 2)) and abs(wrap_angle(yaw - self.env.gripper_yaw)) < 0.1:
                self.phase = 1
            return self.move(goal, CLOSED, yaw=yaw)
        if self.phase == 1:  # lower behind the cube
            goal = np.array([*behind, low])
            if self.near(goal, 0.01):
                self.phase = 2
            if not self.near(goal, 0.03, slice(0, 2)):
                self.phase = 0
            return self.move(goal, CLOSED, speed=0.7)
        # phase 2: push along the line; re-line-up when the tcp leaves it
        tcp = self.env.tcp_pos[:2]
        offset = tcp - cube
        along = float(offset @ d)
        lateral = float(np.linalg.norm(offset - along * d))
        if lateral > 0.015 or along > -CUBE_HALF or along < -(CUBE_HALF + 0.06):
            self.phase = 0
            return self.move([*tcp, HOVER], CLOSED)
        # aim a little into the cube along the cube->target line: re-centres on the line every step
        aim = cube - d * (CUBE_HALF + 0.014) + d * min(0.012, dist)
        return self.move([*aim, low], CLOSED, speed=0.35)


class PickPlaceExpert(ScriptedExpert):
    def plan(self) -> np.ndarray:
        bowl = self.env.body_pos("bowl")
        return self.pick_and_place("cube", bowl[:2], place_z=0.075)


class StackExpert(ScriptedExpert):
    def plan(self) -> np.ndarray:
        if self.env.is_success():
            return self.move(self.env.tcp_pos, OPEN)
        bottom = self.env.body_pos(self.env.bottom)
        return self.pick_and_place(self.env.top, bottom[:2], place_z=bottom[2] + 2 * CUBE_HALF + 0.006)


class RopeExpert(ScriptedExpert):
    """Grasp the rope by a middle segment and drag it along the table to the named edge.

    The jaw closes across the segment with the fingertips just clear of the table, so the fingers meet the
    rope at its equator, and the jaw is kept level (noise in roll or pitch would press one fingertip into the
    table and jam it). The grasp is checked every step on the jaw opening (closed on something rope-thick,
    not on air) and on a segment centre being between the fingers; a miss or a slip sends it back to
    re-grasp. Should the grasp point reach the goal without success, it lets go and drags the segment that
    lags furthest behind.
    """

    GRASP_Z = 0.02  # fingertip centre while closing: fingertips 6 mm above the table, 7 mm below the equator
    DRAG_Z = 0.04  # fingertip centre while dragging: the grasped segment off the table, the rest trailing
    HOVER_Z = 0.07  # fingertip centre above the segment before descending

    def reset(self) -> None:
        super().reset()
        self.segment: str | None = None

    def grasp_yaw(self, body: str) -> float:
        """Close the jaw across the segment, not along it."""
        return self.nearest_yaw(self.env.body_yaw(body) + np.pi / 2, 2)

    def clear_to_grasp(self, index: int) -> bool:
        """No other part of the rope (beyond the segment's neighbours) under or between the open fingers."""
        pos = self.env.segment_positions()
        yaw = self.grasp_yaw(f"rope{index}")
        across, along = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
        rel = pos[:, :2] - pos[index, :2]
        far = np.abs(np.arange(len(pos)) - index) >= 2
        return not np.any(far & (np.abs(rel @ across) < 0.075) & (np.abs(rel @ along) < 0.032))

    def choose_segment(self, order) -> str:
        """The first segment in ``order`` (indices) that is clear to grasp, else the first."""
        order = list(order)
        return f"rope{next((i for i in order if self.clear_to_grasp(i)), order[0])}"

    def holding_rope(self) -> bool:
        """The jaw is closed on something rope-thick and a segment centre is between the fingers."""
        if not 0.1 < self.env.gripper_opening < 0.45:
            return False
        rel = self.env.segment_positions() - self.env.tcp_pos
        return bool(np.any((np.linalg.norm(rel[:, :2], axis=1) < 0.025) & (np.abs(rel[:, 2]) < 0.03)))

    def plan(self) -> np.ndarray:
        env = self.env
        tcp = env.tcp_pos
        if self.segment is None:  # middle segments first, the one nearer the edge first
            along = env.segment_positions()[:, :2] @ env.edge_direction()
            n = len(along)
            self.segment = self.choose_segment(sorted(range(n), key=lambda i: (abs(i - (n - 1) / 2), -along[i])))
        seg = env.body_pos(self.segment)
        if self.phase == 0:  # open, above the segment, jaw across it (straight up first if low and far)
            yaw = self.grasp_yaw(self.segment)
            if tcp[2] < self.HOVER_Z - 0.03 and not self.near(seg, 0.03, slice(0, 2)):
                return self.move([*tcp[:2], self.HOVER_Z], OPEN, yaw)
            above = np.array([seg[0], seg[1], self.HOVER_Z])
            if self.near(above, 0.01, slice(0, 2)) and abs(wrap_angle(yaw - env.gripper_yaw)) < 0.08:
                self.phase = 1
            return self.move(above, OPEN, yaw)
        if self.phase == 1:  # descend around it
            target = np.array([seg[0], seg[1], self.GRASP_Z])
            if not self.near(target, 0.02, slice(0, 2)):
                self.phase = 0
            elif self.near(target, 0.007, slice(0, 2)) and abs(tcp[2] - self.GRASP_Z) < 0.005:
                self.phase, self.counter = 2, 0
            return self.move(target, OPEN, self.grasp_yaw(self.segment), speed=0.7)
        if self.phase == 2:  # close the jaw, then check it closed on the rope
            self.counter += 1
            if self.counter < 3:
                return self.move([*tcp[:2], self.GRASP_Z], CLOSED)
            if not self.holding_rope():
                self.phase, self.segment = 0, None
                return self.move([*tcp[:2], self.HOVER_Z], OPEN)
            self.phase = 3
        if not self.holding_rope():  # slipped: open and start over
            self.phase, self.segment = 0, None
            return self.move([*tcp[:2], self.HOVER_Z], OPEN)
        goal = env.goal_xy()
        if self.near([*goal, self.DRAG_Z], 0.015, slice(0, 2)):  # there, yet no success: fetch the laggard
            behind = env.segment_positions()[:, :2] @ env.edge_direction()
            self.phase, self.segment = 0, self.choose_segment(np.argsort(behind))
            return self.move([*tcp[:2], self.HOVER_Z], OPEN)
        return self.move([*goal, self.DRAG_Z], CLOSED, speed=0.8)


class ToolPullExpert(ScriptedExpert):
    """Grasp the hook by its handle, lift it, turn it to point at the cube, put its end down behind the cube,
    pull the cube back onto the target.

    Every move is planned on the hook's end (read each step), not on the hand: the target hand position is the
    hand plus what the end still has to travel, so the grasp offset does not matter. A lost grasp sends it
    back to re-grasp; a hook end that is not behind the cube while pulling sends it back up to re-place it.
    """

    GRASP_Z = 0.015  # fingertip centre while closing on the handle (fingertips 1 mm above the table)
    CARRY_Z = 0.085  # the hook clears the cubes (4 cm tall) with room to spare
    PULL_Z = 0.017  # the hook end 5 mm above the table: low on the cube, clear of the table

    def grasp_yaw(self, body: str) -> float:
        """Close the jaw across the handle (the handle runs along the tool's y axis, as the jaw's y)."""
        return self.nearest_yaw(self.env.body_yaw(body), 2)

    def holding_tool(self) -> bool:
        handle = self.env.body_pos("tool")
        return bool(np.linalg.norm(handle - self.env.tcp_pos) < 0.03 and 0.2 < self.env.gripper_opening < 0.6)

    def behind_cube(self) -> np.ndarray:
        """Where the hook end's centre must be to pull: just beyond the cube's far side (-y), covering it."""
        cube = self.env.body_pos("cube")
        # the shaft passes 4.5 cm to the cube's right; the end, from the shaft to the left (-x), covers the cube
        return np.array([cube[0] + 0.045 - (HOOK_HALF[0] - SHAFT_HALF[0]), cube[1] - CUBE_HALF - HOOK_HALF[1] - 0.012])

    def turn_to(self, tool_yaw: float) -> float:
        """The gripper yaw that turns the held hook to ``TOOL_YAW`` (the hook turns with the hand)."""
        return self.env.gripper_yaw - wrap_angle(tool_yaw - TOOL_YAW)

    def plan(self) -> np.ndarray:
        env = self.env
        tcp = env.tcp_pos
        handle = env.body_pos("tool")
        if self.phase >= 3 and not self.holding_tool():  # dropped it: up and start over
            self.phase = 0
        if self.phase == 0:  # open, above the handle, jaw across it (straight up first when low)
            yaw = self.grasp_yaw("tool")
            if tcp[2] < HOVER - 0.03 and not self.near(handle, 0.02, slice(0, 2)):
                return self.move([*tcp[:2], HOVER], OPEN, yaw)
            above = np.array([handle[0], handle[1], HOVER])
            if self.near(above, 0.01, slice(0, 2)) and abs(wrap_angle(yaw - env.gripper_yaw)) < 0.06:
                self.phase = 1
            return self.move(above, OPEN, yaw)
        if self.phase == 1:  # descend around the handle
            grasp = np.array([handle[0], handle[1], self.GRASP_Z])
            if not self.near(grasp, 0.02, slice(0, 2)):
                self.phase = 0
            elif self.near(grasp, 0.006):
                self.phase, self.counter = 2, 0
            return self.move(grasp, OPEN, self.grasp_yaw("tool"), speed=0.7)
        if self.phase == 2:  # close the jaw
            self.counter += 1
            if self.counter >= 3:
                self.phase = 3
            return self.move(tcp, CLOSED)
        end, tool_yaw = env.hook_end(), env.body_yaw("tool")
        if self.phase == 3:  # lift
            if tcp[2] > self.CARRY_Z - 0.01:
                self.phase = 4
            return self.move([*tcp[:2], self.CARRY_Z], CLOSED)
        goal = self.behind_cube()
        if self.phase == 4:  # carry the end above the point behind the cube, the shaft pointing at it
            if np.linalg.norm(goal - end[:2]) < 0.006 and abs(wrap_angle(tool_yaw - TOOL_YAW)) < 0.04:
                self.phase = 5
            return self.move([*(tcp[:2] + goal - end[:2]), self.CARRY_Z], CLOSED, self.turn_to(tool_yaw), speed=0.8)
        if self.phase == 5:  # lower the end behind the cube
            if tcp[2] < self.PULL_Z + 0.004:
                self.phase = 6
            return self.move([*(tcp[:2] + goal - end[:2]), self.PULL_Z], CLOSED, self.turn_to(tool_yaw), speed=0.6)
        # phase 6: pull the end back to where the cube sits on the target; re-place the hook if the cube got out
        cube = env.body_pos("cube")
        rel = cube[:2] - end[:2]
        if rel[1] < 0.0 or abs(rel[0]) > HOOK_HALF[0] + 0.01:
            self.phase = 3
            return self.move([*tcp[:2], self.CARRY_Z], CLOSED)
        target = env.body_pos("target")
        aim = goal + (target[:2] - cube[:2]) + np.array([0.0, 0.01])  # the end's goal: cube onto the pad (a bit past)
        step = aim - end[:2]
        return self.move([*(tcp[:2] + step), self.PULL_Z], CLOSED, self.turn_to(tool_yaw), speed=0.5)


class MultiTaskExpert:
    """Delegates to the expert of the task the MultiTask env sampled for this episode."""

    def __init__(self, env, noise: float = 0.0, seed: int | None = None):
        self.env = env.unwrapped
        self.experts = {name: make_expert(sub, noise, seed) for name, sub in self.env.tasks.items()}

    def reset(self) -> None:
        for expert in self.experts.values():
            expert.reset()

    def select_action(self, obs=None) -> np.ndarray:
        return self.experts[self.env.current_task].select_action(obs)


EXPERTS = {
    "Reach": ReachExpert,
    "Push": PushExpert,
    "PickPlace": PickPlaceExpert,
    "Stack": StackExpert,
    "Rope": RopeExpert,
    "ToolPull": ToolPullExpert,
    "MultiTask": MultiTaskExpert,
}


def make_expert(env, noise: float = 0.0, seed: int | None = None):
    """The scripted expert for a gr2-sim env (wrapped or not)."""
    task = getattr(env.unwrapped, "task_name", None)
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for env {env.unwrapped!r} (task {task!r}); "
                         f"experts exist for: {', '.join(EXPERTS)}")
    return EXPERTS[task](env, noise=noise, seed=seed)
