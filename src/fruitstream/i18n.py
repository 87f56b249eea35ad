"""English and Spanish texts of the app, fruit names included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LANGUAGES = {"en": "English", "es": "Español"}

FRUITS: dict[str, dict[str, str]] = {
    "apple": {"en": "apple", "es": "manzana"},
    "avocado": {"en": "avocado", "es": "aguacate"},
    "banana": {"en": "banana", "es": "plátano"},
    "cherry": {"en": "cherry", "es": "cereza"},
    "grape": {"en": "grape", "es": "uva"},
    "kiwi": {"en": "kiwi", "es": "kiwi"},
    "lemon": {"en": "lemon", "es": "limón"},
    "lime": {"en": "lime", "es": "lima"},
    "mango": {"en": "mango", "es": "mango"},
    "orange": {"en": "orange", "es": "naranja"},
    "peach": {"en": "peach", "es": "melocotón"},
    "pear": {"en": "pear", "es": "pera"},
    "pineapple": {"en": "pineapple", "es": "piña"},
    "pomegranate": {"en": "pomegranate", "es": "granada"},
    "strawberry": {"en": "strawberry", "es": "fresa"},
}

TEXTS: dict[str, dict[str, str]] = {
    "title": {"en": "fruitstream: which fruit is it?", "es": "fruitstream: ¿qué fruta es?"},
    "tab.upload": {"en": "Upload", "es": "Subir foto"},
    "tab.camera": {"en": "Camera", "es": "Cámara"},
    "tab.batch": {"en": "Batch", "es": "Lote"},
    "upload.label": {"en": "Choose a photo", "es": "Elige una foto"},
    "camera.label": {"en": "Take a photo", "es": "Haz una foto"},
    "result.is": {"en": "It is: {fruit}", "es": "Es: {fruit}"},
    "result.unknown": {
        "en": "Not one of the 15 fruits I know (closest guess: {fruit}, {pct})",
        "es": "No es una de las 15 frutas que conozco (lo más parecido: {fruit}, {pct})",
    },
    "result.top": {"en": "Top guesses", "es": "Mejores opciones"},
    "result.time": {"en": "classified in {ms:.0f} ms", "es": "clasificada en {ms:.0f} ms"},
    "label.ask": {"en": "Right? Tap the fruit it is.", "es": "¿Correcto? Toca la fruta que es."},
    "label.unsure": {
        "en": "Not sure. Is it one of these?",
        "es": "No estoy seguro. ¿Es una de estas?",
    },
    "label.other": {"en": "something else…", "es": "otra cosa…"},
    "label.fruit": {"en": "A fruit I know", "es": "Una fruta que conozco"},
    "label.not_fruit": {"en": "not a fruit", "es": "no es una fruta"},
    "label.new": {"en": "or a new fruit's name", "es": "o el nombre de una fruta nueva"},
    "label.save": {"en": "Save", "es": "Guardar"},
    "label.saved": {"en": "Thanks: saved as {fruit}", "es": "Gracias: guardada como {fruit}"},
    "label.correct": {"en": "Correct a photo", "es": "Corregir una foto"},
    "label.photo": {"en": "Photo", "es": "Foto"},
    "label.tile": {"en": "Correct this one", "es": "Corregir esta"},
    "error.file": {"en": "{name}: {reason}", "es": "{name}: {reason}"},
    "error.backend": {
        "en": "Batches are unavailable right now: {reason}. Single photos still work.",
        "es": "Los lotes no están disponibles ahora: {reason}. Las fotos sueltas funcionan.",
    },
    "batch.page": {"en": "Page (of {pages})", "es": "Página (de {pages})"},
    "batch.label": {"en": "Choose photos", "es": "Elige fotos"},
    "batch.submit": {"en": "Classify the batch", "es": "Clasificar el lote"},
    "batch.none": {"en": "Choose at least one photo.", "es": "Elige al menos una foto."},
    "batch.session": {"en": "Session {sid}", "es": "Sesión {sid}"},
    "batch.progress": {
        "en": "{done} of {total} classified",
        "es": "{done} de {total} clasificadas",
    },
    "batch.history": {"en": "Past sessions", "es": "Sesiones anteriores"},
    "batch.open": {"en": "Open", "es": "Abrir"},
    "batch.table": {"en": "Results", "es": "Resultados"},
    "batch.grid": {"en": "Photos", "es": "Fotos"},
    "batch.stats": {"en": "Statistics", "es": "Estadísticas"},
    "batch.download": {"en": "Download CSV", "es": "Descargar CSV"},
    "stats.count": {"en": "Photos", "es": "Fotos"},
    "stats.mean": {"en": "Mean confidence", "es": "Confianza media"},
    "stats.unknown": {"en": "Unknown", "es": "Desconocidas"},
    "stats.errors": {"en": "Errors", "es": "Errores"},
    "stats.rate": {"en": "Photos per second", "es": "Fotos por segundo"},
    "stats.per_fruit": {"en": "Photos per fruit", "es": "Fotos por fruta"},
    "col.file": {"en": "file", "es": "archivo"},
    "col.fruit": {"en": "fruit", "es": "fruta"},
    "col.confidence": {"en": "confidence", "es": "confianza"},
    "col.known": {"en": "known", "es": "conocida"},
    "col.status": {"en": "status", "es": "estado"},
    "col.error": {"en": "error", "es": "error"},
    "unknown": {"en": "unknown", "es": "desconocida"},
    "sidebar.health": {"en": "System", "es": "Sistema"},
    "sidebar.model": {"en": "Model", "es": "Modelo"},
    "sidebar.classes": {"en": "Knows {n} fruits", "es": "Conoce {n} frutas"},
}


def fruit_name(label: str, lang: str) -> str:
    return FRUITS.get(label, {}).get(lang, label)


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``lang``, falling back to English, then to the key."""

    def t(key: str, **values: Any) -> str:
        entry = TEXTS.get(key)
        text = key if entry is None else entry.get(lang, entry["en"])
        return text.format(**values) if values else text

    return t
