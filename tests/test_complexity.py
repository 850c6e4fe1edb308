"""Parameter and MAC counts, checked against the hand count of a network whose layers are known."""
from sar_cloud_removal.models.complexity import count_macs, count_parameters
from sar_cloud_removal.models.registry import build


def test_dsen2cr_counts_match_the_hand_count():
    width, blocks, size = 8, 2, 32
    network = build("dsen2cr", width=width, blocks=blocks)
    convs = [(15, width)] + [(width, width)] * (2 * blocks) + [(width, 13)]   # (in, out), 3×3
    assert count_macs(network, size) == sum(9 * i * o for i, o in convs) * size * size
    assert count_parameters(network) == sum(9 * i * o + o for i, o in convs)


def test_counting_leaves_a_training_network_in_training_mode():
    network = build("ibhfn", width=4, sar_width=2, downsamplings=2)
    assert count_macs(network, 32) > 0
    assert network.training
    assert count_macs(build("identity"), 32) == 0
