"""The recipes a build's sets are made by, registered in one place.

A recipe is one module (see `pipelines.recipes.base`); adding one is that module plus a line here (or a
`register` call, for a recipe that lives outside the package).
"""

from __future__ import annotations

from pipelines.recipes.base import BuildContext, BuildSet, Recipe, Section
from pipelines.recipes.existing_shards import ExistingShards
from pipelines.recipes.i2v_event import I2VEvent
from pipelines.recipes.sekai import Sekai
from pipelines.recipes.t2v_synthetic import T2VSynthetic
from pipelines.recipes.videos import Videos
from yume_core.config import ConfigError

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def recipe(name: str, where: str = "recipe") -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"{where}: unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


register(Sekai())
register(T2VSynthetic())
register(I2VEvent())
register(ExistingShards())
register(Videos())

__all__ = ["RECIPES", "BuildContext", "BuildSet", "Recipe", "Section", "recipe", "register"]
