"""Fast settings of the registered networks (their structure at tiny widths), shared by the
registry-wide tests and the per-network ones. Every size multiple divides 32, so one 32-px crop
suits them all, and the attention networks keep windows of several tokens (with one token per
window, attention weights would be constant and their projections untrainable)."""
SMALL_CONFIGS = {
    "ibhfn": dict(width=4, sar_width=2, depth=1, downsamplings=2),                    # 4
    "dsen2cr": dict(width=8, blocks=2),                                               # 1
    "mmcanet": dict(width=4, sar_width=2, downsamplings=2, heads=2, window=4),        # 16
    "sgbafm": dict(width=4, directed_width=8, blocks=1, attention_dim=8, heads=2, window=2),  # 32
    "identity": {},                                                                   # 1
}
# an ensemble of two of them (models/ensemble.py): lcm(4, 1) = 4
SMALL_CONFIGS["ensemble"] = dict(members=[
    {"architecture": "ibhfn", "config": SMALL_CONFIGS["ibhfn"]},
    {"architecture": "dsen2cr", "config": SMALL_CONFIGS["dsen2cr"]}])
