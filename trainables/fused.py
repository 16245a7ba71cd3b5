"""K trials of one architecture trained as one model: their parameters stacked along a new first
dimension, one vmapped forward and backward per batch for all of them (HFTA's horizontal fusion,
written with ``torch.func``), then one optimizer step with each member's own lr, momentum, L2 and
weight decay. Small networks are launch-bound on a GPU; K members cost about one launch.

Members see the same batches in the same order; everything else is theirs: weights, optimizer
state, batch-norm statistics (vmap keeps one set per member), loss and gradient. Each member's
state moves in and out of an ordinary ``TrialState``, so its checkpoint is a trial's checkpoint
and a member can resume fused or alone."""

from __future__ import annotations

import copy
import math
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from trainables.config import TrialConfig
from trainables.device import Runtime
from trainables.evaluation import EVAL_BATCH, Evaluation, evaluation
from trainables.model import Dropout
from trainables.networks import layer_weights
from trainables.trial_state import TrialState

# What members may differ in: the optimizer's numbers, the penalty, the schedule (an lr per
# member per epoch), the initial weights and the divergence rule. Anything else changes the model,
# the data or the number of steps, so trials that differ in it train apart.
FUSIBLE = frozenset(
    {
        "lr",
        "momentum",
        "dropout",
        "l2",
        "weight_decay",
        "seed",
        "lr_schedule",
        "lr_step_epochs",
        "lr_step_gamma",
        "divergence_factor",
    }
)
ADAM_STATE = ("exp_avg", "exp_avg_sq")


def fusion_key(config: TrialConfig) -> tuple:
    """Trials with equal keys can train as one group."""
    return tuple(
        (f.name, repr(getattr(config, f.name))) for f in fields(config) if f.name not in FUSIBLE
    )


def why_not_fused(configs: list[TrialConfig]) -> str:
    """One line saying why these configs cannot train as one group, or '' when they can."""
    if not configs:
        return "no trials to fuse"
    first = configs[0]
    for other in configs[1:]:
        if fusion_key(other) != fusion_key(first):
            differ = [
                f.name
                for f in fields(first)
                if f.name not in FUSIBLE and getattr(first, f.name) != getattr(other, f.name)
            ]
            return f"their {', '.join(differ)} differ (members may differ only in {_fusible()})"
    if first.cv_folds:
        return f"cv_folds={first.cv_folds}: cross-validated trials train one fold after another"
    return ""


def _fusible() -> str:
    return ", ".join(sorted(FUSIBLE))


class FusedModels:
    """The stacked members: ``forward`` gives [K, N, classes] logits, ``step`` trains them all on
    one batch. ``keep`` drops members (a stopped or diverged trial leaves the stack)."""

    def __init__(self, states: list[TrialState], runtime: Runtime) -> None:
        configs = [s.config for s in states]
        reason = why_not_fused(configs)
        if reason:
            raise ValueError(f"these {len(states)} trials cannot train fused: {reason}")
        self.runtime = runtime
        self.optimizer, self.nesterov = configs[0].optimizer, configs[0].nesterov
        model = states[0].model
        names = {id(p): n for n, p in model.named_parameters()}
        self.penalized = [names[id(w)] for w in layer_weights(model).values()]
        self.base = copy.deepcopy(model).to("meta")
        self.params = {
            n: torch.stack([dict(s.model.named_parameters())[n].detach() for s in states])
            for n, _ in model.named_parameters()
        }
        self.buffers = {
            n: torch.stack([dict(s.model.named_buffers())[n] for s in states])
            for n, _ in model.named_buffers()
        }
        if any(c.dropout > 0 for c in configs):
            rates = torch.tensor([c.dropout for c in configs], device=runtime.device)
            for name in _member_dropouts(self.base):
                self.buffers[f"{name}.p"] = rates
        self.slots = self._stack_optimizer_states(states)
        self.set_hyper(configs, [c.lr for c in configs])

    def set_hyper(self, configs: list[TrialConfig], lrs: list[float]) -> None:
        """Each member's numbers for the next steps (its lr changes with its schedule)."""
        device = self.runtime.device

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.lr = column(lrs)
        self.momentum = column([c.momentum for c in configs])
        self.l2 = column([c.l2 for c in configs])
        self.weight_decay = column([c.weight_decay for c in configs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def one(params: dict, buffers: dict, images: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (params, buffers), (images,))

        with self.runtime.autocast():  # each member draws its own dropout masks
            return vmap(one, in_dims=(0, 0, None), randomness="different")(
                self.params, self.buffers, x
            )

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    @torch.no_grad()
    def assess(self, x: torch.Tensor, y: torch.Tensor) -> list[Evaluation]:
        """``evaluation.assess`` for every member in one pass over the split (one host sync
        for all), in eval mode: each member's own batch-norm statistics, no dropout."""
        training = self.base.training
        self.train(False)
        chunk = max(64, EVAL_BATCH // len(self.lr))  # K members' activations at once
        sums = torch.zeros(len(self.lr), 3, device=self.runtime.device)
        predictions = []
        for i in range(0, len(y), chunk):
            logits, target = self.forward(x[i : i + chunk]).float(), y[i : i + chunk]
            k, n, classes = logits.shape
            losses = F.cross_entropy(
                logits.reshape(k * n, classes), target.repeat(k), reduction="none"
            ).view(k, n)
            predicted = logits.argmax(dim=2)
            hits = (predicted == target).sum(dim=1).float()
            sums += torch.stack((losses.sum(dim=1), losses.square().sum(dim=1), hits), dim=1)
            predictions.append(predicted)
        self.train(training)
        predicted = torch.cat(predictions, dim=1)
        return [evaluation(*row, predicted[k]) for k, row in enumerate(sums.tolist())]

    def step(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every member on the batch: per member, the loss with its L2 penalty,
        the number of correct predictions and the penalty (device tensors of [K])."""
        params = list(self.params.values())
        for p in params:
            p.requires_grad_(True)
        logits = self.forward(x).float()
        k, n, classes = logits.shape
        losses = F.cross_entropy(logits.reshape(k * n, classes), y.repeat(k), reduction="none")
        losses = losses.view(k, n).mean(dim=1)
        grads = dict(zip(self.params, torch.autograd.grad(losses.sum(), params), strict=True))
        with torch.no_grad():
            for p in params:
                p.requires_grad_(False)
            penalty = self.l2 * sum(
                torch.linalg.vector_norm(self.params[n].flatten(1), dim=1).square()
                for n in self.penalized
            )
            for n in self.penalized:
                grads[n].add_(self._per_member(2 * self.l2, grads[n]) * self.params[n])
            self._apply(grads)
            correct = (logits.argmax(dim=2) == y).sum(dim=1)
        return losses.detach() + penalty, correct, penalty

    def _per_member(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.view(-1, *([1] * (like.dim() - 1)))

    def _apply(self, grads: dict[str, torch.Tensor]) -> None:
        """torch.optim's update, member by member in one op per parameter (SGD without
        dampening; Adam and AdamW with torch's defaults)."""
        if self.optimizer == "sgd":
            for n, p in self.params.items():
                buf = self.slots[n]["momentum_buffer"]
                momentum = self._per_member(self.momentum, buf)
                buf.mul_(momentum).add_(grads[n])
                update = grads[n].add(buf * momentum) if self.nesterov else buf
                p.sub_(self._per_member(self.lr, p) * update)
            return
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for n, p in self.params.items():
            slot, g = self.slots[n], grads[n]
            slot["step"] += 1
            if self.optimizer == "adamw":
                p.mul_(1 - self._per_member(self.lr * self.weight_decay, p))
            slot["exp_avg"].lerp_(g, 1 - beta1)
            slot["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            steps = slot["step"].double()  # 1 - 0.999**t in fp32 would be 1e-5 off
            correction1 = 1 - beta1**steps
            correction2 = (1 - beta2**steps).sqrt().float()
            step_size = self._per_member((self.lr.double() / correction1).float(), p)
            denom = (slot["exp_avg_sq"].sqrt() / self._per_member(correction2, p)).add_(eps)
            p.sub_(step_size * (slot["exp_avg"] / denom))

    def keep(self, members: list[int]) -> None:
        """Only these members (indices into the stack) train on."""
        index = torch.tensor(members, device=self.runtime.device)
        for group in (self.params, self.buffers):
            for n in group:
                group[n] = group[n].index_select(0, index)
        for slot in self.slots.values():
            for key in slot:
                slot[key] = slot[key].index_select(0, index)
        for name in ("lr", "momentum", "l2", "weight_decay"):
            setattr(self, name, getattr(self, name).index_select(0, index))

    def _stack_optimizer_states(self, states: list[TrialState]) -> dict[str, dict]:
        """Each parameter's optimizer slots stacked over members (zeros before a first step,
        which is what torch's first step amounts to)."""
        slots: dict[str, dict] = {}
        for n in self.params:
            per_member = []
            for s in states:
                param = dict(s.model.named_parameters())[n]
                saved = s.optimizer.state.get(param, {})
                per_member.append(self._slot(saved, param))
            slots[n] = {key: torch.stack([m[key] for m in per_member]) for key in per_member[0]}
        return slots

    def _slot(self, saved: dict, param: torch.Tensor) -> dict[str, torch.Tensor]:
        zeros = torch.zeros_like(param, memory_format=torch.contiguous_format)
        if self.optimizer == "sgd":
            buf = saved.get("momentum_buffer")
            return {"momentum_buffer": zeros if buf is None else buf.detach().clone()}
        step = saved.get("step", torch.tensor(0.0))
        slot = {k: saved[k].detach().clone() if k in saved else zeros for k in ADAM_STATE}
        return {**slot, "step": torch.as_tensor(step, dtype=torch.float32).to(param.device)}

    def write_back(self, states: list[TrialState]) -> None:
        """Copy each member's weights, statistics and optimizer slots into its ``TrialState``
        (in stack order), so that ``state.save`` writes an ordinary trial checkpoint."""
        for i, s in enumerate(states):
            with torch.no_grad():
                for n, p in s.model.named_parameters():
                    p.copy_(self.params[n][i])
                for n, b in s.model.named_buffers():
                    b.copy_(self.buffers[n][i])
            for n, p in s.model.named_parameters():
                slot = self.slots[n]
                if self.optimizer == "sgd":
                    if s.config.momentum != 0:
                        s.optimizer.state[p] = {
                            "momentum_buffer": slot["momentum_buffer"][i].clone()
                        }
                elif not math.isclose(float(slot["step"][i]), 0.0):
                    state = {k: slot[k][i].clone() for k in ADAM_STATE}
                    s.optimizer.state[p] = {"step": slot["step"][i].detach().cpu(), **state}


class MemberDropout(nn.Module):
    """The seed CNN's dropout in a stack: each member's own rate (a buffer that vmap splits
    like the others) and its own masks (vmap's ``randomness="different"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("p", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1 - self.p)


def _member_dropouts(base: nn.Module) -> list[str]:
    """Swap the stack's dropout modules for ``MemberDropout``; their names."""
    names = [n for n, m in base.named_modules() if isinstance(m, Dropout)]
    for name in names:
        parent, _, child = name.rpartition(".")
        base.get_submodule(parent).register_module(child, MemberDropout().to("meta"))
    return names
