"""Course material around the library: figures, the block diagram, the glossary, the routing
explorer widgets, the exercise checkers and the notebooks' setup cell.

Nothing in the library (`moe_edu.*` outside this package) imports from here: a training script
or a checkpoint loader never pulls in matplotlib or ipywidgets.
"""
