"""The report's figures, at their public path `kstruct.plots`; the code is `kstruct.report.plots`."""

from kstruct.report.plots import FIGURES, figures, layers_figure, save_figures, stages_figure, training_figure

__all__ = ["FIGURES", "figures", "save_figures", "stages_figure", "layers_figure", "training_figure"]
