"""imgclf: turn folders of labelled photos into a trained, evaluated image classifier.

import imgclf
run = imgclf.train("cars-planes/training_set", val="cars-planes/val_set", augment="seed")
imgclf.load(run.run_dir).predict("plane.jpg")
"""

from imgclf.config import AugmentConfig, ImgclfError, Preprocessing, TrainConfig
from imgclf.data.folders import DatasetError
from imgclf.data.images import ImageError, open_image
from imgclf.deploy.predictor import Prediction, Run, load
from imgclf.evaluation.explain import explain_image
from imgclf.models import create_model, list_models, register_model
from imgclf.runs import RunError
from imgclf.training.loop import TrainingInterrupted, train

__version__ = "0.1.0"

__all__ = [
    "AugmentConfig",
    "DatasetError",
    "ImageError",
    "ImgclfError",
    "Prediction",
    "Preprocessing",
    "Run",
    "RunError",
    "TrainConfig",
    "TrainingInterrupted",
    "create_model",
    "explain_image",
    "list_models",
    "load",
    "open_image",
    "register_model",
    "train",
]
