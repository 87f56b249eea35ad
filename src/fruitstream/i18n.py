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
    "upload.another": {"en": "Choose another photo", "es": "Elegir otra foto"},
    "camera.label": {"en": "Take a photo", "es": "Haz una foto"},
    "result.is": {"en": "It is: {fruit}", "es": "Es: {fruit}"},
    "result.unknown": {
        "en": "Not one of the {n} fruits I know (closest guess: {fruit}, {pct})",
        "es": "No es una de las {n} frutas que conozco (lo más parecido: {fruit}, {pct})",
    },
    "result.or": {
        "en": "{fruit} or {other}? Too close to tell.",
        "es": "¿{fruit} o {other}? Demasiado parecidas para decidir.",
    },
    "result.maybe": {
        "en": "Maybe {fruit}? I am not sure.",
        "es": "¿Quizá {fruit}? No estoy seguro.",
    },
    "result.top": {"en": "Top guesses", "es": "Mejores opciones"},
    "result.top_unknown": {
        "en": "How much it looks like the fruits I know (low figures: none of them fits)",
        "es": "Cuánto se parece a las frutas que conozco (cifras bajas: no encaja ninguna)",
    },
    "result.alt": {"en": "The photo: {name}", "es": "La foto: {name}"},
    "share.card": {"en": "Save as image", "es": "Guardar como imagen"},
    "share.json": {"en": "Save as JSON", "es": "Guardar como JSON"},
    "language": {"en": "Language", "es": "Idioma"},
    "error.start": {
        "en": "The app cannot start: {reason}",
        "es": "La aplicación no puede arrancar: {reason}",
    },
    "error.unexpected": {
        "en": "Something went wrong on the server; it is in the server's log. Please try again.",
        "es": "Algo ha fallado en el servidor; consta en su registro. Vuelve a intentarlo.",
    },
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
    "label.tile": {"en": "Correct", "es": "Corregir"},
    "error.file": {"en": "{name}: {reason}", "es": "{name}: {reason}"},
    "error.backend": {
        "en": "Batches are unavailable right now: {reason}. Single photos still work.",
        "es": "Los lotes no están disponibles ahora: {reason}. Las fotos sueltas funcionan.",
    },
    "batch.page": {"en": "Page (of {pages})", "es": "Página (de {pages})"},
    "batch.label": {"en": "Choose photos", "es": "Elige fotos"},
    "batch.submit": {"en": "Classify the batch", "es": "Clasificar el lote"},
    "batch.none": {"en": "Choose at least one photo.", "es": "Elige al menos una foto."},
    "batch.session": {"en": "Batch: {sid}", "es": "Lote: {sid}"},
    "batch.name": {"en": "Name of the batch (optional)", "es": "Nombre del lote (opcional)"},
    "batch.unnamed": {"en": "{n} photos", "es": "{n} fotos"},
    "batch.photo_count": {"en": "{n} photos", "es": "{n} fotos"},
    "batch.one": {"en": "1 photo", "es": "1 foto"},
    "batch.auto_name": {"en": "{first} and {more} more", "es": "{first} y {more} más"},
    "batch.waiting": {
        "en": "{total} photos stored and queued; the workers take them in batches.",
        "es": "{total} fotos guardadas y en cola; se clasifican por tandas.",
    },
    "batch.progress": {
        "en": "{done} of {total} classified",
        "es": "{done} de {total} clasificadas",
    },
    "batch.history": {
        "en": "Your batches and photos (this browser)",
        "es": "Tus lotes y fotos (este navegador)",
    },
    "batch.table": {"en": "Results", "es": "Resultados"},
    "batch.grid": {"en": "Photos", "es": "Fotos"},
    "batch.stats": {"en": "Statistics", "es": "Estadísticas"},
    "batch.download": {"en": "Download CSV", "es": "Descargar CSV"},
    "stats.count": {"en": "Photos", "es": "Fotos"},
    "stats.mean": {"en": "Mean confidence", "es": "Confianza media"},
    "stats.unknown": {"en": "Unknown", "es": "Desconocidas"},
    "stats.errors": {"en": "Errors", "es": "Errores"},
    "stats.time": {"en": "Time to answer", "es": "Tiempo de respuesta"},
    "stats.per_fruit": {"en": "Photos per fruit", "es": "Fotos por fruta"},
    "col.file": {"en": "file", "es": "archivo"},
    "col.fruit": {"en": "fruit", "es": "fruta"},
    "col.confidence": {"en": "confidence", "es": "confianza"},
    "col.known": {"en": "known", "es": "conocida"},
    "col.status": {"en": "status", "es": "estado"},
    "col.error": {"en": "error", "es": "error"},
    "col.failed": {"en": "could not be classified", "es": "no se pudo clasificar"},
    "caption.unknown": {
        "en": "unknown (closest: {fruit})",
        "es": "desconocida (lo más parecido: {fruit})",
    },
    "unknown": {"en": "unknown", "es": "desconocida"},
    "sidebar.health": {"en": "System", "es": "Sistema"},
    "sidebar.model": {"en": "Model", "es": "Modelo"},
    "sidebar.classes": {"en": "Knows {n} fruits", "es": "Conoce {n} frutas"},
    "health.ok": {"en": "Everything is working", "es": "Todo funciona"},
    "health.down": {"en": "Not working now: {parts}", "es": "No funciona ahora: {parts}"},
    "health.details": {
        "en": "Details for operators (in English)",
        "es": "Detalles para operadores (en inglés)",
    },
    "part.storage": {"en": "photo storage", "es": "almacén de fotos"},
    "part.queue": {"en": "queue", "es": "cola"},
    "part.results database": {"en": "results database", "es": "base de datos"},
    "part.workers": {"en": "batch workers", "es": "clasificadores de lotes"},
    "part.model": {"en": "model", "es": "modelo"},
}


# What Streamlit itself writes on its widgets (it has no languages of its own), in Spanish:
# the page's script puts these in place in the browser. Exact texts, then patterns.
WIDGET_TEXTS: dict[str, dict[str, str]] = {
    "es": {
        "Drag and drop file here": "Arrastra y suelta la foto aquí",
        "Drag and drop files here": "Arrastra y suelta las fotos aquí",
        "Upload": "Subir",
        "Browse files": "Buscar archivos",
        "Take Photo": "Hacer la foto",
        "Take photo": "Hacer la foto",
        "Clear photo": "Borrar la foto",
        "Switch camera": "Cambiar de cámara",
        "This app would like to use your camera.": "Esta aplicación quiere usar tu cámara.",
        "Learn how to allow access.": "Cómo permitir el acceso.",
        "Press Enter to apply": "Pulsa Intro para aplicar",
        "Press Enter to submit form": "Pulsa Intro para enviar",
        "Choose an option": "Elige una opción",
        "No results": "Sin resultados",
        "Fullscreen": "Pantalla completa",
        "Close fullscreen": "Salir de pantalla completa",
        "Download as CSV": "Descargar como CSV",
        "Search": "Buscar",
        "Show/hide columns": "Mostrar u ocultar columnas",
        "Skip to main content": "Ir al contenido principal",
        "Running...": "Trabajando…",
        "Stop": "Parar",
        "Increment": "Aumentar",
        "Decrement": "Disminuir",
        "Open sidebar": "Abrir panel lateral",
        "Close sidebar": "Cerrar panel lateral",
        "Expand sidebar": "Abrir panel lateral",
        "Collapse sidebar": "Cerrar panel lateral",
        "Main menu": "Menú principal",
        "Add files": "Añadir fotos",
        "Upload files": "Subir fotos",
        "file upload": "subir archivo",
        "Sidebar": "Panel lateral",
        "Open": "Abrir",
        "Close": "Cerrar",
        "add icon": "icono de añadir",
    },
}
WIDGET_PATTERNS: dict[str, list[tuple[str, str]]] = {
    "es": [
        (r"^Limit (\S+) per file(.*)$", "Límite: $1 por archivo$2"),
        (r"^(\S+) per file(.*)$", "$1 por archivo$2"),
        (r"^Remove (.+)$", "Quitar $1"),
        (r"^Fullscreen: (.+)$", "Pantalla completa: $1"),
        (r"^Showing page (\d+) of (\d+)$", "Página $1 de $2"),
    ],
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
