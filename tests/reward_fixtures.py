"""Reward functions used by tests through the recipe's 'module:function' path.

They have the TRL signature; ``length_reward`` gives a random tiny model varied rewards so
updates really happen in short trainer tests."""
import time


def length_reward(prompts, completions, **kwargs):
    # Longer completions score higher (up to 6 chars): any sampled batch has reward variance.
    return [min(len(c), 6) / 6 for c in completions]


def raising_reward(prompts, completions, **kwargs):
    raise RuntimeError("this reward always fails")


def hanging_reward(prompts, completions, **kwargs):
    time.sleep(3600)


async def async_digit_reward(prompts, completions, **kwargs):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def none_reward(prompts, completions, **kwargs):
    return [None] * len(completions)


def slow_length_reward(prompts, completions, **kwargs):
    # Slows each step down so a test can kill the run between checkpoints.
    time.sleep(0.4)
    return length_reward(prompts, completions)


def string_reward(prompts, completions, **kwargs):
    return ["1.0"] * len(completions)


def short_reward(prompts, completions, **kwargs):
    return [1.0]


def step_reward(prompts, completions, trainer_state, **kwargs):
    # Scheduled by the trainer's step, as TRL rewards may be.
    return [trainer_state.global_step / max(trainer_state.max_steps, 1)] * len(completions)


def narrow_reward(completions):
    # No **kwargs: gets only what it names.
    return [float(len(c)) for c in completions]


_loops: list = []


async def loop_recording_reward(prompts, completions, **kwargs):
    import asyncio

    _loops.append(asyncio.get_running_loop())
    return [0.0] * len(completions)


def args_reward(prompts, completions, scale: float = 1.0, **kwargs):
    return [scale] * len(completions)


def digit_fraction_reward(prompts, completions, **kwargs):
    # Share of digits in the completion: a random tiny model starts near 0.13 and learns it in ~10 steps.
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
