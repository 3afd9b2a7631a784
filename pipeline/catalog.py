"""The catalogs of steps 2 and 12: GPUs (data/catalog/gpus.csv), models (Hugging Face config.json files, model
cards, vLLM memory measurements) and prices (prices.csv).

Each lives in its own module: catalog_gpus, catalog_models, catalog_prices, with the CSV rules they share
in catalog_csv. Every name stays importable from here (`from pipeline import catalog; catalog.load_gpus()`).
"""

from __future__ import annotations

from pipeline.catalog_csv import norm_name, parse_number
from pipeline.catalog_csv import read_csv_rows as read_csv_rows
from pipeline.catalog_gpus import FORMATS as FORMATS
from pipeline.catalog_gpus import GPU as GPU
from pipeline.catalog_gpus import GPU_COLUMNS as GPU_COLUMNS
from pipeline.catalog_gpus import GPU_NUMERIC as GPU_NUMERIC
from pipeline.catalog_gpus import GPU_POSITIVE as GPU_POSITIVE
from pipeline.catalog_gpus import GPU_REQUIRED as GPU_REQUIRED
from pipeline.catalog_gpus import GPUS_CSV as GPUS_CSV
from pipeline.catalog_gpus import INTERCONNECTS as INTERCONNECTS
from pipeline.catalog_gpus import PEAK_COLUMN as PEAK_COLUMN
from pipeline.catalog_gpus import find_gpu as find_gpu
from pipeline.catalog_gpus import load_gpus as load_gpus
from pipeline.catalog_gpus import read_gpu_rows as read_gpu_rows
from pipeline.catalog_models import DTYPE_NAMES as DTYPE_NAMES
from pipeline.catalog_models import MAX_COUNT as MAX_COUNT
from pipeline.catalog_models import MAX_LAYERS as MAX_LAYERS
from pipeline.catalog_models import MEASUREMENTS_CSV as MEASUREMENTS_CSV
from pipeline.catalog_models import MODELS_CSV as MODELS_CSV
from pipeline.catalog_models import MODELS_DIR as MODELS_DIR
from pipeline.catalog_models import Model as Model
from pipeline.catalog_models import ModelCard as ModelCard
from pipeline.catalog_models import ParamBreakdown as ParamBreakdown
from pipeline.catalog_models import load_measurements as load_measurements
from pipeline.catalog_models import load_model as load_model
from pipeline.catalog_models import load_model_cards as load_model_cards
from pipeline.catalog_models import model_files as model_files
from pipeline.catalog_models import parse_config as parse_config
from pipeline.catalog_models import read_config as read_config
from pipeline.catalog_prices import PRICE_COLUMNS as PRICE_COLUMNS
from pipeline.catalog_prices import PRICES_CSV as PRICES_CSV
from pipeline.catalog_prices import Price as Price
from pipeline.catalog_prices import load_prices as load_prices

_norm = norm_name  # the old private names, for callers that used them
_num = parse_number
