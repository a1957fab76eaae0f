"""The options of :class:`~robot_rl.agents.sac.SAC`, each a plain value a config file sets (``configs/agent/*.yaml``),
validated on construction so a bad value is named before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robot_rl.agents.base import config_from_dict


@dataclass
class SACConfig:
    """Hyper-parameters. Defaults are plain SAC; ``configs/agent/rlpd.yaml`` switches on the RLPD options."""

    hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    num_target_critics: int = 2  # critics sampled for the target; the target is their minimum
    critic_layer_norm: bool = False
    actor_layer_norm: bool = False
    actor_q_reduce: str = "min"  # how the actor aggregates the ensemble: "min" (SAC) or "mean" (RLPD)
    utd_ratio: int = 1  # critic updates per update() call (per env step)
    batch_size: int = 256
    discount: float = 0.99
    n_step: int = 1  # bootstrap n env steps ahead within an episode (the replay buffers sum the rewards between)
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -(continuous action dims) / 2
    backup_entropy: bool = True  # subtract alpha * log pi in the critic target
    device: str = "auto"
    # Learner arithmetic: "fp32", or "bf16" (autocast of the update's matrix products to bfloat16, CPU with AVX-512
    # BF16 / AMX or CUDA; the weights, optimizer state, targets and losses stay float32), or "auto": bf16 where the
    # device computes it natively (resolve_precision), else fp32. act() is always float32.
    precision: str = "fp32"
    fused_optimizer: bool = False  # Adam's fused kernel (one kernel for all parameters; CPU and CUDA)
    # torch.compile of the critic ensembles and the actor for the update (act() stays eager): True, False, or
    # "auto": on where a probe compiles here (resolve_compile). The first updates take seconds to compile.
    compile: bool | str = False
    # The last critic step of each update() and the actor + temperature step as one pass: one forward, one backward,
    # then the three optimizer steps. The actor is then scored by the critic from before that critic step (the
    # two-step order scores it after). Fewer, larger compiled graphs: faster on the CPU measured (robot-rl bench
    # learner). loss="sac" only: the other losses add terms to the critic step that this pass does not compute.
    joint_update: bool = False
    # Observation encoder (robot_rl.agents.encoders.EncoderConfig): null picks by observation space (state: the
    # standardiser; cameras: frozen pretrained trunk + trainable heads with the feature cache). Image features train
    # with the critic loss (DrQ); the actor and the gripper critic see them detached.
    encoder: dict | None = None
    # Gripper (the last action dim). "continuous": one more actor output like the arm dims. "discrete": a separate
    # DQN over {open, stay, close} -> commands {-1, 0, +1}; the actor and critic then cover the arm dims only.
    gripper: str = "continuous"
    gripper_penalty: float = 0.1  # subtracted from the gripper critic's reward for each toggle (open<->closed)
    # obs["state"][gripper_state_index] > 0.5 means "closed" before the action (sim: the "gripper_cmd" entry of
    # PandaEnv.state_layout). A batch key "gripper_state" takes precedence. With neither, every open/close command
    # counts as a toggle (see robot_rl.agents.gripper.gripper_toggles).
    gripper_state_index: int | None = None
    gripper_num_critics: int = 2  # gripper Q ensemble; target and greedy action use the minimum over members
    gripper_epsilon_start: float = 0.2  # epsilon-greedy exploration of the gripper in act(deterministic=False) ...
    gripper_epsilon_end: float = 0.02  # ... decaying linearly to this ...
    gripper_epsilon_decay_steps: int = 5000  # ... over this many exploratory act() calls
    # Behaviour cloning on corrected actions (HG-DAgger, ConRFT): the actor loss gains bc_weight x the mean squared
    # error between the policy's mean action and the executed action, over the batch rows a person (or the simulated
    # operator) drove (``is_intervention``). 0: off. Arm dims only with the discrete gripper.
    bc_weight: float = 0.0
    bc_on_demos: bool = False  # clone the demo buffer's rows too (batch key ``from_demo``), not only the corrections
    # Q filter (Nair et al., 2018): clone a row only where the critic rates its action above the policy's own,
    # Q(s, a_data) > Q(s, pi(s)) (the actor's ensemble reduction on both sides), so cloning stops where RL has
    # already found better than the operator's (noisy) correction.
    bc_q_filter: bool = False
    # What the critic and the actor optimise (robot_rl/agents/offline.py): "sac" (online; RLPD with the options above),
    # "cql" (the SAC losses plus the conservative penalty; with cql_calibrated, Cal-QL) or "iql" (an expectile value,
    # a critic towards r + gamma V(s'), the policy by advantage-weighted regression; no action outside the data is
    # evaluated, and there is no temperature). All three act, checkpoint and log alike.
    loss: str = "sac"
    cql_alpha: float = 5.0  # weight of the penalty
    cql_samples: int = 10  # sampled actions per state, for each of: uniform, policy at s, policy at s'
    cql_temperature: float = 1.0
    cql_calibrated: bool = False  # Cal-QL: the sampled actions' Q bounded below by the data's Monte-Carlo return
    cql_max_target_backup: bool = False  # the critic target from the best of cql_samples policy actions at s'
    iql_expectile: float = 0.7
    iql_beta: float = 3.0  # inverse temperature of the advantage weights
    iql_max_weight: float = 100.0  # clip of exp(beta * advantage)
    # how the policy is fitted to the weighted data actions: "likelihood" (a Gaussian around tanh(mu) with a learned
    # std: its mean learns as slowly as the std is wide) or "regression" (weighted squared error of the mean action)
    iql_extraction: str = "regression"
    # "h2o" (sim + real hybrid, Niu et al. 2022): the SAC losses on batches of simulated (online) and real (the demo
    # buffer's, ``from_demo``) rows, two real-vs-sim discriminators estimating the dynamics ratio of each simulated
    # transition, its Bellman error weighted by that ratio and a value penalty on simulated rows with a large gap.
    h2o_alpha: float = 1.0  # weight of the value penalty
    h2o_ratio_clip: float = 1.0  # a simulated row's Bellman weight is at most this
    h2o_disc_noise: float = 0.1  # Gaussian noise on the discriminators' inputs (standardised features)
    # ExPLORe: the demo buffer holds reward-free prior data (``prior=`` stores); their rows (``from_demo``) are given
    # a learned reward estimate plus prior_bonus x an RND novelty bonus, both trained on the online rows.
    optimistic_prior: bool = False
    prior_bonus: float = 1.0
    # Residual RL (robot_rl/agents/residual.py): the actor corrects a frozen base policy's action (``base_policy=``):
    # executed = clip(base + residual_scale x gain x a, -1, 1), gain rising from 0 to 1 over residual_phase_in updates.
    residual: bool = False
    residual_scale: float = 0.3
    residual_phase_in: int = 0
    # DSRL (robot_rl/agents/residual.py): > 0: the actions are a flow-matching base policy's latent noise / this bound
    dsrl_noise_bound: float = 0.0

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.encoder = None if self.encoder is None else dict(self.encoder)
        if not 1 <= self.num_target_critics <= self.num_critics:
            raise ValueError(
                f"num_target_critics={self.num_target_critics} must be in [1, num_critics={self.num_critics}]"
            )
        if self.actor_q_reduce not in ("min", "mean"):
            raise ValueError(f"actor_q_reduce={self.actor_q_reduce!r}; valid: 'min', 'mean'")
        for name in ("utd_ratio", "batch_size", "num_critics", "n_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.optimistic_prior and self.n_step > 1:
            raise ValueError(f"optimistic_prior labels one step at a time: set n_step=1 (not {self.n_step}) with it")
        if not 0.0 < self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"discount={self.discount} and tau={self.tau} must lie in (0, 1]")
        if self.gripper not in ("continuous", "discrete"):
            raise ValueError(f"gripper={self.gripper!r}; valid: 'continuous', 'discrete'")
        if not self.bc_weight >= 0:
            raise ValueError(f"bc_weight={self.bc_weight} must be >= 0 (0: no behaviour cloning on corrections)")
        if self.gripper_penalty < 0:
            raise ValueError(f"gripper_penalty={self.gripper_penalty} must be >= 0 (it is subtracted per toggle)")
        if self.gripper_num_critics < 1:
            raise ValueError(f"gripper_num_critics={self.gripper_num_critics} must be >= 1")
        if self.gripper_state_index is not None and int(self.gripper_state_index) < 0:
            raise ValueError(f"gripper_state_index={self.gripper_state_index} must be >= 0 or null")
        if not 0.0 <= self.gripper_epsilon_end <= self.gripper_epsilon_start <= 1.0:
            raise ValueError(
                f"need 0 <= gripper_epsilon_end ({self.gripper_epsilon_end}) <= gripper_epsilon_start "
                f"({self.gripper_epsilon_start}) <= 1"
            )
        if self.gripper_epsilon_decay_steps < 0:
            raise ValueError(f"gripper_epsilon_decay_steps={self.gripper_epsilon_decay_steps} must be >= 0")
        if self.iql_extraction not in ("likelihood", "regression"):
            raise ValueError(f"iql_extraction={self.iql_extraction!r}; valid: 'likelihood', 'regression'")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision={self.precision!r}; valid: 'fp32', 'bf16', 'auto'")
        if self.compile not in (True, False, "auto"):
            raise ValueError(f"compile={self.compile!r}; valid: true, false, 'auto'")
        if self.loss not in ("sac", "cql", "iql", "h2o"):
            raise ValueError(f"loss={self.loss!r}; valid: 'sac', 'cql' (Cal-QL with cql_calibrated), 'iql', 'h2o'")
        if self.joint_update and self.loss != "sac":
            raise ValueError(f"joint_update=true needs loss='sac' (not {self.loss!r}): set joint_update=false")
        if self.residual and not (0.0 < self.residual_scale <= 2.0 and self.residual_phase_in >= 0):
            raise ValueError(
                f"residual_scale={self.residual_scale} must lie in (0, 2] and residual_phase_in="
                f"{self.residual_phase_in} be >= 0"
            )
        if self.residual and (self.gripper != "continuous" or self.loss == "iql"):
            raise ValueError("a residual actor corrects continuous actions with loss sac, cql or h2o (not "
                             f"gripper={self.gripper!r} with loss={self.loss!r})")  # fmt: skip
        if self.prior_bonus < 0:
            raise ValueError(f"prior_bonus={self.prior_bonus} must be >= 0 (0: the reward estimate alone)")
        if self.h2o_alpha < 0 or self.h2o_ratio_clip <= 0 or self.h2o_disc_noise < 0:
            raise ValueError(
                f"h2o_alpha={self.h2o_alpha} and h2o_disc_noise={self.h2o_disc_noise} must be >= 0, h2o_ratio_clip="
                f"{self.h2o_ratio_clip} > 0"
            )
        if self.cql_alpha < 0 or self.cql_samples < 1 or self.cql_temperature <= 0:
            raise ValueError(
                f"cql_alpha={self.cql_alpha} must be >= 0, cql_samples={self.cql_samples} >= 1 and "
                f"cql_temperature={self.cql_temperature} > 0"
            )
        if not 0.0 < self.iql_expectile < 1.0 or self.iql_beta < 0 or self.iql_max_weight <= 0:
            raise ValueError(
                f"iql_expectile={self.iql_expectile} must lie in (0, 1), iql_beta={self.iql_beta} be >= 0 and "
                f"iql_max_weight={self.iql_max_weight} > 0"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SACConfig:
        """Build from a (hydra) mapping, naming unknown keys instead of ignoring them."""
        return config_from_dict(cls, d, "agent")
