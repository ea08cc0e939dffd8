from flask import Blueprint
bp = Blueprint("openai", __name__)
