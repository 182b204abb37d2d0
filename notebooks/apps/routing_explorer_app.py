# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Routing explorer
#
# Which experts does each token go to? Type any text: every token is coloured by its k chosen experts (one band per
# expert, as tall as its weight) at the chosen layer. Hover a token for its weights, click it to follow it through the
# layers, click an expert in the legend to dim the others. The model is the course's tiny Mixtral (4 layers, 8
# experts, top-2, trained offline); notebook 06 explains every view. Served alone by `make explorer` (Voilà).

# %%
import moe_edu
from moe_edu.course.notebook import setup
from moe_edu.course.widgets.explorer import RoutingExplorer

setup()  # seed 0, one thread: the same routing every run
model, tokenizer = moe_edu.load_pretrained()
RoutingExplorer(model, tokenizer, id_prefix="app")
