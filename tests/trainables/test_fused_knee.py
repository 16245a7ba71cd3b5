from trainables.fused_knee import GAIN, knee


def test_the_knee_doubles_k_while_images_per_second_grow_enough(faces_config, faces):
    config = faces_config.replace(batch_size=32, threads=2)
    size, figures = knee(config, faces, most=4, steps=3)
    ks = list(figures)
    assert ks[0] == 1 and ks == [2**i for i in range(len(ks))] and ks[-1] <= 4
    chain = 1
    for k in ks[1:]:
        if figures[k] < GAIN * figures[k // 2]:
            assert k == ks[-1]  # it stops at the first K that did not pay
            break
        chain = k
    assert size == chain and all(v > 0 for v in figures.values())
    assert list(knee(config, faces, most=1, steps=2)[1]) == [1]
