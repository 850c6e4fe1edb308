"""Parameter and MAC counts, checked against the hand count of a network whose layers are known."""
from sar_cloud_removal.models.complexity import count_macs, count_parameters
from sar_cloud_removal.models.registry import build


def test_dsen2cr_counts_match_the_hand_count():
    width, blocks, size = 8, 2, 32
    network = build("dsen2cr", width=width, blocks=blocks)
    hidden = network.mask.body[0].out_channels
    convs = [(15, width)] + [(width, width)] * (2 * blocks) + [(width, 13)]   # (in, out), 3×3
    convs += [(width, hidden)]                                                 # the mask head
    macs = sum(9 * i * o for i, o in convs) + hidden                           # + its 1×1
    assert count_macs(network, size) == macs * size * size
    assert count_parameters(network) == sum(9 * i * o + o for i, o in convs) + hidden + 1


def test_counting_leaves_a_training_network_in_training_mode():
    network = build("ibhfn", width=4, sar_width=2, downsamplings=2)
    assert count_macs(network, 32) > 0
    assert network.training
    assert count_macs(build("identity"), 32) == 0


def test_a_network_that_takes_only_multiples_is_counted_on_the_next_one_and_scaled():
    """MMCANet with 7-px windows takes multiples of 56: 256² cannot run, so it is counted at
    280² and scaled by area (every layer costs the same per pixel)."""
    from sar_cloud_removal.models.complexity import _macs_at

    network = build("mmcanet", width=4, sar_width=2, downsamplings=3, window=7)
    assert network.size_multiple == 56
    assert count_macs(network, 256) == round(_macs_at(network, 280) * (256 / 280) ** 2)
    assert _macs_at(network, 560) == 4 * _macs_at(network, 280)
