from pathlib import Path

import numpy as np

from orchestrator.study.spec import load_spec, parse_spec
from orchestrator.study.starter import found, starter_spec
from trainables.image_folder import ImageSet


def image_set(counts: dict[str, int], test: int = 0, channels: int = 3) -> ImageSet:
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(counts.values())])
    labels = np.concatenate([labels, np.zeros(test, dtype=int)])
    shown = np.zeros((len(labels), channels, 8, 6), dtype=np.uint8)
    is_test = np.arange(len(labels)) >= len(labels) - test
    return ImageSet(shown, labels, is_test, tuple(counts))


def test_the_starter_spec_is_the_recipe_on_the_folder_and_says_what_it_found():
    data = Path("/data/my digits #2")
    text = starter_spec(data, image_set({"cat": 30, "dog": 42}))
    spec = parse_spec(text, "starter")
    recipe = load_spec("imagefolder", data=str(data))
    assert spec == recipe.model_copy(update={"trial": spec.trial})  # the defaults, spelled out
    assert spec.base_config() == recipe.base_config()
    assert spec.name == "my-digits-2" and spec.trial["data"] == str(data)
    assert "#   2 classes (cat, dog)\n" in text
    assert "#   72 images, 6x8 colour; 30 to 42 images per class\n" in text
    assert "#   no test/ folder: 20% of each class is held out to test\n" in text


def test_what_was_found_names_a_shipped_test_split_and_shortens_many_classes():
    classes = {str(i): 5 for i in range(12)}
    said = found(image_set(classes, test=7, channels=1))
    assert said[0] == "12 classes (0, 1, 2, 3, 4, 5, ..., 11)"
    assert said[1] == "67 images, 6x8 grey; 5 to 5 images per class"
    assert said[2] == "its test/ folder (7 images) is the test split"
