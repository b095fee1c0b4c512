"""Translation rewards (ExTrans-style exemplar comparison, reference metrics, hacking gates).

Heavy pieces (sacrebleu, lingua, judge clients) load on first use, so importing this package
costs nothing until a recipe asks for a translation reward."""
