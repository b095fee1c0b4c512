"""Soft Actor-Critic (SAC v2, Haarnoja et al. 2018, arXiv 1812.05905) for the RLDP hyper-policy.

Small and self-contained: a tanh-squashed Gaussian actor, twin Q critics with Polyak-averaged
target networks, automatic entropy tuning (target entropy -dim A) and a replay buffer. Episodes
of DP fine-tuning are short (T/K transitions), so the whole agent (networks, optimizers, alpha,
buffer) saves to and loads from one ``state_dict``: a later run warm-starts from it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def mlp(inp: int, out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


@dataclass
class SacSettings:
    hidden: int = 128
    lr: float = 3e-4
    gamma: float = 0.9
    polyak: float = 0.005
    batch_size: int = 64
    buffer_size: int = 10_000
    updates_per_transition: int = 8
    init_std: float = 0.1  # the untrained actor: mean ~0 (the baseline action), this std before tanh
    # entropy temperature at the start: rewards per interval are ~1e-2, so alpha = 1 (the usual start)
    # makes entropy the whole objective, and ~100 updates per run cannot tune it down
    init_alpha: float = 1e-3


class SacAgent:
    """SAC over actions in [-1, 1]^action_dim.

    >>> agent = SacAgent(state_dim=3, action_dim=2, seed=0)
    >>> a = agent.act(torch.zeros(3))
    >>> a.shape, bool((a.abs() <= 1).all())
    (torch.Size([2]), True)
    """

    def __init__(self, state_dim: int, action_dim: int, *, settings: SacSettings | None = None, seed: int = 0):
        self.cfg = settings or SacSettings()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            h = self.cfg.hidden
            self.actor = mlp(state_dim, 2 * action_dim, h)
            self.q1, self.q2 = mlp(state_dim + action_dim, 1, h), mlp(state_dim + action_dim, 1, h)
            self.q1_target, self.q2_target = mlp(state_dim + action_dim, 1, h), mlp(state_dim + action_dim, 1, h)
            # start near the baseline action with little exploration: ~30 transitions per run cannot
            # pay for exploring the whole action box (the default init explores it at std ~1)
            head = self.actor[-1]
        with torch.no_grad():
            head.weight.mul_(0.01)
            head.bias.zero_()
            head.bias[action_dim:] = math.log(self.cfg.init_std)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.tensor(math.log(self.cfg.init_alpha), requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=self.cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=self.cfg.lr)
        self.buffer: list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]] = []

    def _sample(self, states: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparametrised tanh-Gaussian action and its log-probability (SAC paper, eq. 26)."""
        mean, log_std = self.actor(states).chunk(2, dim=-1)
        log_std = log_std.clamp(-5.0, 2.0)
        u = mean + log_std.exp() * noise
        a = torch.tanh(u)
        logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # tanh change of variables
        return a, logp

    def act(self, state: torch.Tensor, *, deterministic: bool = False) -> torch.Tensor:
        with torch.no_grad():
            if deterministic:
                return torch.tanh(self.actor(state).chunk(2, dim=-1)[0])
            noise = torch.randn(self.action_dim, generator=self.gen)
            return self._sample(state, noise)[0]

    def remember(self, state: torch.Tensor, action: torch.Tensor, reward: float, next_state: torch.Tensor) -> None:
        self.buffer.append((state.detach().clone(), action.detach().clone(), float(reward), next_state.detach().clone()))
        del self.buffer[:-self.cfg.buffer_size]

    def learn(self) -> dict[str, float]:
        """``updates_per_transition`` gradient steps on minibatches drawn from the buffer.

        Continuing task (no terminal flag): the run's end is a time limit, not a state."""
        stats: dict[str, float] = {}
        if not self.buffer:
            return stats
        for _ in range(self.cfg.updates_per_transition):
            idx = torch.randint(len(self.buffer), (min(self.cfg.batch_size, len(self.buffer)),), generator=self.gen)
            s, a, r, s2 = (torch.stack([self.buffer[i][k] for i in idx.tolist()]) if k != 2 else
                           torch.tensor([self.buffer[i][2] for i in idx.tolist()]) for k in range(4))
            alpha = self.log_alpha.exp().detach()
            with torch.no_grad():
                a2, logp2 = self._sample(s2, torch.randn(a.shape, generator=self.gen))
                sa2 = torch.cat([s2, a2], -1)
                q_next = torch.min(self.q1_target(sa2), self.q2_target(sa2)).squeeze(-1) - alpha * logp2
                y = r + self.cfg.gamma * q_next
            sa = torch.cat([s, a], -1)
            q_loss = F.mse_loss(self.q1(sa).squeeze(-1), y) + F.mse_loss(self.q2(sa).squeeze(-1), y)
            self.q_opt.zero_grad()
            q_loss.backward()
            self.q_opt.step()
            a_new, logp = self._sample(s, torch.randn(a.shape, generator=self.gen))
            sa_new = torch.cat([s, a_new], -1)
            q_new = torch.min(self.q1(sa_new), self.q2(sa_new)).squeeze(-1)
            actor_loss = (alpha * logp - q_new).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            with torch.no_grad():
                for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                    for p, tp in zip(net.parameters(), target.parameters()):
                        tp.mul_(1 - self.cfg.polyak).add_(p, alpha=self.cfg.polyak)
            stats = {"sac/q_loss": q_loss.item(), "sac/actor_loss": actor_loss.item(),
                     "sac/alpha": self.log_alpha.exp().item()}
        return stats

    def state_dict(self) -> dict:
        return {
            "dims": [self.state_dim, self.action_dim],
            "nets": {k: getattr(self, k).state_dict() for k in ("actor", "q1", "q2", "q1_target", "q2_target")},
            "opts": {k: getattr(self, k).state_dict() for k in ("actor_opt", "q_opt", "alpha_opt")},
            "log_alpha": self.log_alpha.detach().clone(),
            "buffer": [list(t) for t in self.buffer],
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict, *, with_buffer: bool = True) -> None:
        if list(state["dims"]) != [self.state_dim, self.action_dim]:
            raise ValueError(f"the saved SAC policy has (state, action) dims {list(state['dims'])}, this run needs "
                             f"{[self.state_dim, self.action_dim]}: warm-start only from a run with the same groups")
        for k, v in state["nets"].items():
            getattr(self, k).load_state_dict(v)
        for k, v in state["opts"].items():
            getattr(self, k).load_state_dict(v)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if with_buffer:
            self.buffer = [(s, a, float(r), s2) for s, a, r, s2 in state["buffer"]]
            self.gen.set_state(state["gen"])
