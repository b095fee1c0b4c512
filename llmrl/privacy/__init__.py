"""Differentially private fine-tuning: DP-SGD (Opacus) with per-group clipping and noise, a privacy
filter that keeps the realised epsilon under the target, controllers that set the knobs (fixed,
Opacus adaptive clipping, a SAC hyper-policy as in RLDP), and attacks that measure leakage
(canary exposure, loss-threshold membership inference). See docs/privacy.md."""
