"""Per-language words, inflection and sentence templates for the scene captions.

Every language has three phrasebooks: ``train`` (phrasings used for training captions),
``test`` (phrasings used only in test captions) and ``val`` (phrasings used only in validation
captions, so that settings are chosen on phrasings the model never saw, as the test's are,
without looking at the test's). ``markers`` / ``val_markers`` list words and phrases that occur
only in the test / validation phrasebook, so a test can prove no other caption uses them.

Template slots: ``{objs}`` list of indefinite noun phrases, ``{a}`` indefinite noun phrase
with size, ``{the}`` definite subject, ``{other}`` the second object after a relation
preposition (dative in German, ``de``/``di`` + article contracted in Romance languages),
``{other_def}`` the second object as a plain definite phrase, ``{pos}`` a grid position,
``{n}`` a number word, ``{bg}`` / ``{bg_attr}`` the background colour (predicative /
attributive form).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
BACKGROUNDS = ("white", "grey", "black")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")


@dataclass(frozen=True)
class Phrasebook:
    short: tuple[str, ...]
    count_one: tuple[str, ...]
    count_many: tuple[str, ...]
    obj: tuple[str, ...]
    relation: Mapping[str, tuple[str, ...]]
    background: tuple[str, ...]
    positions: tuple[str, ...]      # 3x3 grid, row-major from the top left
    sizes: Mapping[str, str]        # "small"/"large" -> the language's adjective lemma
    conj: str                       # joins the last item of a list

    def templates(self) -> list[str]:
        """Every sentence template and phrase of the book (for lexicon checks)."""
        out = [*self.short, *self.count_one, *self.count_many, *self.obj, *self.background,
               *self.positions]
        for rel in RELATIONS:
            out.extend(self.relation[rel])
        return out


def _book(**kw) -> Phrasebook:
    kw["relation"] = MappingProxyType(dict(kw["relation"]))
    kw["sizes"] = MappingProxyType(dict(kw["sizes"]))
    return Phrasebook(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


class Language(ABC):
    """Noun-phrase building for one language; subclasses hold the words and rules."""
    code: str
    numbers: Mapping[int, str]                  # 2..4
    backgrounds: Mapping[str, tuple[str, str]]  # colour -> (predicative, attributive)
    train: Phrasebook
    test: Phrasebook
    val: Phrasebook
    markers: tuple[str, ...]
    val_markers: tuple[str, ...]

    @abstractmethod
    def indefinite(self, colour: str, shape: str, size: str) -> str:
        """"a large red circle": indefinite article, size, colour, shape."""

    @abstractmethod
    def definite(self, colour: str, shape: str) -> str:
        """"the red circle" (a scene never repeats a colour-shape pair)."""

    def oblique(self, colour: str, shape: str) -> str:
        """The object as it follows this language's relation prepositions."""
        return self.definite(colour, shape)

    def join(self, items: list[str], conj: str) -> str:
        if len(items) == 1:
            return items[0]
        return ", ".join(items[:-1]) + f" {conj} " + items[-1]

    def finish(self, text: str) -> str:
        """Spelling fixes that only the finished text shows (e.g. French elision)."""
        return text


def _fem_o_to_a(word: str) -> str:
    return word[:-1] + "a" if word.endswith("o") else word


class English(Language):
    code = "en"
    numbers = {2: "two", 3: "three", 4: "four"}
    backgrounds = {"white": ("white", "white"), "grey": ("grey", "grey"), "black": ("black", "black")}

    @staticmethod
    def article(word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    def indefinite(self, colour, shape, size):
        return f"{self.article(size)} {size} {colour} {shape}"

    def definite(self, colour, shape):
        return f"the {colour} {shape}"

    train = _book(
        short=["{objs}", "a picture of {objs}", "{objs} on a {bg} background"],
        count_one=["There is one object.", "The image contains a single object.", "I count one shape."],
        count_many=["There are {n} objects.", "The image contains {n} objects.", "I count {n} shapes."],
        obj=["{a} is {pos}.", "There is {a} {pos}.", "{pos} there is {a}."],
        relation={"left": ["{the} is to the left of {other}.", "{the} is left of {other}."],
                  "right": ["{the} is to the right of {other}.", "{the} is right of {other}."],
                  "above": ["{the} is above {other}."],
                  "below": ["{the} is below {other}.", "{the} is under {other}."]},
        background=["The background is {bg}.", "The scene has a {bg} background."],
        positions=["in the top left corner", "at the top", "in the top right corner",
                   "on the left", "in the center", "on the right",
                   "in the bottom left corner", "at the bottom", "in the bottom right corner"],
        sizes={"small": "small", "large": "large"}, conj="and")
    test = _book(
        short=["an image showing {objs}", "{objs} against a {bg} backdrop", "a rendering of {objs}"],
        count_one=["Only one shape is visible.", "We can spot a single item."],
        count_many=["In total, {n} shapes are visible.", "We can spot {n} items."],
        obj=["{a} is located {pos}.", "{pos}, one can see {a}."],
        relation={"left": ["{the} sits further left than {other_def}.",
                           "{the} is on the left-hand side of {other}."],
                  "right": ["{the} sits further right than {other_def}.",
                            "{the} is on the right-hand side of {other}."],
                  "above": ["{the} sits higher up than {other_def}.", "{the} is positioned over {other}."],
                  "below": ["{the} sits lower down than {other_def}.",
                            "{the} is positioned beneath {other}."]},
        background=["The backdrop is {bg}.", "Everything lies on a {bg} backdrop."],
        positions=["in the upper left area", "near the upper edge", "in the upper right area",
                   "on the left-hand side", "in the middle", "on the right-hand side",
                   "in the lower left area", "near the lower edge", "in the lower right area"],
        sizes={"small": "tiny", "large": "big"}, conj="as well as")
    markers = ("big", "tiny", "showing", "rendering", "backdrop", "visible", "spot", "located",
               "one can see", "upper", "lower", "middle", "hand side", "sits", "further", "higher",
               "positioned", "beneath", "as well as")
    val = _book(
        short=["a drawing of {objs}", "{objs} drawn on a {bg} canvas"],
        count_one=["Just one figure appears."],
        count_many=["Altogether {n} figures appear."],
        obj=["{a} appears {pos}."],
        relation={"left": ["{the} appears closer to the left than {other_def}."],
                  "right": ["{the} appears closer to the right than {other_def}."],
                  "above": ["{the} appears nearer the top than {other_def}."],
                  "below": ["{the} appears nearer the bottom than {other_def}."]},
        background=["The canvas is {bg}."],
        positions=["toward the top left", "toward the top", "toward the top right", "toward the left",
                   "at the centre", "toward the right", "toward the bottom left", "toward the bottom",
                   "toward the bottom right"],
        sizes={"small": "little", "large": "huge"}, conj="plus")
    val_markers = ("drawing", "drawn", "canvas", "just one", "figure", "figures", "altogether", "appear",
                   "appears", "closer", "nearer", "toward", "centre", "little", "huge", "plus")


class German(Language):
    code = "de"
    numbers = {2: "zwei", 3: "drei", 4: "vier"}
    backgrounds = {"white": ("weiß", "weißem"), "grey": ("grau", "grauem"),
                   "black": ("schwarz", "schwarzem")}
    nouns = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
             "star": ("Stern", "m"), "cross": ("Kreuz", "n"), "ring": ("Ring", "m"),
             "diamond": ("Raute", "f"), "heart": ("Herz", "n")}
    dative = {"Herz": "Herzen"}
    colours = {"red": "rot", "orange": "orangefarben", "yellow": "gelb", "green": "grün",
               "blue": "blau", "purple": "violett", "pink": "rosafarben", "brown": "braun"}
    # (article, adjective ending): nominative after the indefinite article (mixed declension)
    _indef = {"m": ("ein", "er"), "f": ("eine", "e"), "n": ("ein", "es")}
    _def_nom = {"m": "der", "f": "die", "n": "das"}
    _def_dat = {"m": "dem", "f": "der", "n": "dem"}

    def indefinite(self, colour, shape, size):
        noun, g = self.nouns[shape]
        art, end = self._indef[g]
        return f"{art} {size}{end} {self.colours[colour]}{end} {noun}"

    def definite(self, colour, shape):
        noun, g = self.nouns[shape]
        return f"{self._def_nom[g]} {self.colours[colour]}e {noun}"

    def oblique(self, colour, shape):
        noun, g = self.nouns[shape]
        return f"{self._def_dat[g]} {self.colours[colour]}en {self.dative.get(noun, noun)}"

    train = _book(
        short=["{objs}", "ein Bild: {objs}", "{objs} auf {bg_attr} Hintergrund"],
        count_one=["Es gibt ein Objekt.", "Das Bild enthält ein einziges Objekt."],
        count_many=["Es gibt {n} Objekte.", "Das Bild enthält {n} Objekte."],
        obj=["{a} ist {pos}.", "{pos} ist {a}."],
        relation={"left": ["{the} ist links von {other}."], "right": ["{the} ist rechts von {other}."],
                  "above": ["{the} ist über {other}."], "below": ["{the} ist unter {other}."]},
        background=["Der Hintergrund ist {bg}."],
        positions=["oben links", "oben", "oben rechts", "links", "in der Mitte", "rechts",
                   "unten links", "unten", "unten rechts"],
        sizes={"small": "klein", "large": "groß"}, conj="und")
    test = _book(
        short=["{objs} vor {bg_attr} Hintergrund", "zu sehen: {objs}"],
        count_one=["Nur eine einzige Form ist zu sehen."],
        count_many=["Insgesamt sind {n} Formen zu sehen."],
        obj=["{a} befindet sich {pos}."],
        relation={"left": ["{the} liegt weiter links als {other_def}."],
                  "right": ["{the} liegt weiter rechts als {other_def}."],
                  "above": ["{the} liegt höher als {other_def}."],
                  "below": ["{the} liegt tiefer als {other_def}."]},
        background=["Die Hintergrundfarbe ist {bg}."],
        positions=["im oberen linken Bereich", "am oberen Rand", "im oberen rechten Bereich",
                   "am linken Rand", "genau in der Mitte", "am rechten Rand",
                   "im unteren linken Bereich", "am unteren Rand", "im unteren rechten Bereich"],
        sizes={"small": "klein", "large": "groß"}, conj="sowie")
    markers = ("vor", "zu sehen", "befindet sich", "liegt", "weiter", "höher", "tiefer",
               "Hintergrundfarbe", "Bereich", "Rand", "genau", "sowie")
    val = _book(
        short=["Zeichnung: {objs}", "{objs}, gezeichnet auf {bg_attr} Grund"],
        count_one=["Man erkennt eine einzelne Figur."],
        count_many=["Man erkennt {n} Figuren."],
        obj=["{a} erscheint {pos}."],
        relation={"left": ["{the} erscheint links neben {other}."],
                  "right": ["{the} erscheint rechts neben {other}."],
                  "above": ["{the} ist oberhalb von {other}."],
                  "below": ["{the} ist unterhalb von {other}."]},
        background=["Der Untergrund ist {bg}."],
        positions=["in der linken oberen Ecke", "oben mittig", "in der rechten oberen Ecke", "links mittig",
                   "mittig", "rechts mittig", "in der linken unteren Ecke", "unten mittig",
                   "in der rechten unteren Ecke"],
        sizes={"small": "winzig", "large": "riesig"}, conj="und dazu")
    val_markers = ("Zeichnung", "gezeichnet", "Grund", "erkennt", "Figur", "Figuren", "erscheint", "neben",
                   "oberhalb", "unterhalb", "Untergrund", "Ecke", "mittig", "winzig", "riesig", "dazu")


class French(Language):
    code = "fr"
    numbers = {2: "deux", 3: "trois", 4: "quatre"}
    backgrounds = {"white": ("blanc", "blanc"), "grey": ("gris", "gris"), "black": ("noir", "noir")}
    nouns = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
             "star": ("étoile", "f"), "cross": ("croix", "f"), "ring": ("anneau", "m"),
             "diamond": ("losange", "m"), "heart": ("cœur", "m")}
    colours = {"red": "rouge", "orange": "orange", "yellow": "jaune", "green": "vert",
               "blue": "bleu", "purple": "violet", "pink": "rose", "brown": "marron"}
    feminine = {"vert": "verte", "bleu": "bleue", "violet": "violette", "petit": "petite",
                "grand": "grande"}

    def _adj(self, lemma, gender):
        return self.feminine.get(lemma, lemma) if gender == "f" else lemma

    def _article(self, noun, gender):
        return "l'" if noun[0] in "aeéiou" else ("le " if gender == "m" else "la ")

    def indefinite(self, colour, shape, size):
        noun, g = self.nouns[shape]
        art = "un" if g == "m" else "une"
        return f"{art} {self._adj(size, g)} {noun} {self._adj(self.colours[colour], g)}"

    def definite(self, colour, shape):
        noun, g = self.nouns[shape]
        return f"{self._article(noun, g)}{noun} {self._adj(self.colours[colour], g)}"

    def oblique(self, colour, shape):
        phrase = self.definite(colour, shape)
        return "du " + phrase[3:] if phrase.startswith("le ") else "de " + phrase

    def finish(self, text):
        return re.sub(r"\b(d|qu)e (une?)\b", r"\1'\2", text)  # de un -> d'un, que une -> qu'une

    train = _book(
        short=["{objs}", "une image de {objs}", "{objs} sur fond {bg}"],
        count_one=["Il y a un seul objet.", "L'image contient un objet."],
        count_many=["Il y a {n} objets.", "L'image contient {n} objets."],
        obj=["{a} est {pos}.", "{pos}, il y a {a}."],
        relation={"left": ["{the} est à gauche {other}."], "right": ["{the} est à droite {other}."],
                  "above": ["{the} est au-dessus {other}."], "below": ["{the} est en dessous {other}."]},
        background=["Le fond est {bg}."],
        positions=["en haut à gauche", "en haut", "en haut à droite", "à gauche", "au centre",
                   "à droite", "en bas à gauche", "en bas", "en bas à droite"],
        sizes={"small": "petit", "large": "grand"}, conj="et")
    test = _book(
        short=["une image montrant {objs}", "{objs} sur un arrière-plan {bg}"],
        count_one=["On voit une seule forme."],
        count_many=["Au total, on voit {n} formes."],
        obj=["{a} se trouve {pos}."],
        relation={"left": ["{the} se situe plus à gauche que {other_def}."],
                  "right": ["{the} se situe plus à droite que {other_def}."],
                  "above": ["{the} se situe plus haut que {other_def}."],
                  "below": ["{the} se situe plus bas que {other_def}."]},
        background=["L'arrière-plan est {bg}."],
        positions=["dans le coin supérieur gauche", "près du bord supérieur",
                   "dans le coin supérieur droit", "sur le côté gauche", "au milieu",
                   "sur le côté droit", "dans le coin inférieur gauche", "près du bord inférieur",
                   "dans le coin inférieur droit"],
        sizes={"small": "petit", "large": "grand"}, conj="ainsi que")
    markers = ("montrant", "arrière-plan", "on voit", "se trouve", "se situe", "supérieur",
               "inférieur", "côté", "milieu", "ainsi que")
    val = _book(
        short=["un dessin de {objs}", "{objs}, le tout sur un fond {bg}"],
        count_one=["On distingue une seule figure."],
        count_many=["On distingue {n} figures."],
        obj=["{a} apparaît {pos}."],
        relation={"left": ["{the} apparaît à gauche {other}."],
                  "right": ["{the} apparaît à droite {other}."],
                  "above": ["{the} apparaît au-dessus {other}."],
                  "below": ["{the} apparaît au-dessous {other}."]},
        background=["Le fond de l'image est {bg}."],
        positions=["vers le haut à gauche", "vers le haut", "vers le haut à droite", "vers la gauche",
                   "pile au centre", "vers la droite", "vers le bas à gauche", "vers le bas",
                   "vers le bas à droite"],
        sizes={"small": "minuscule", "large": "énorme"}, conj="et aussi")
    val_markers = ("dessin", "le tout", "distingue", "figure", "figures", "apparaît", "au-dessous",
                   "fond de l'image", "vers", "pile", "minuscule", "énorme", "et aussi")


class _Romance(Language):
    """Spanish, Italian, Portuguese: noun, colour, size; feminine -o -> -a; de/di + article."""
    nouns: Mapping[str, tuple[str, str]]  # shape -> (noun, gender)
    colours: Mapping[str, str]            # colour -> masculine adjective
    articles: Mapping[str, str]      # gender -> definite article
    indef_articles: Mapping[str, str]
    contractions: Mapping[str, str]  # definite article -> contracted "of the"

    def _adj(self, lemma, gender):
        return _fem_o_to_a(lemma) if gender == "f" else lemma

    def indefinite(self, colour, shape, size):
        noun, g = self.nouns[shape]
        return f"{self.indef_articles[g]} {noun} {self._adj(self.colours[colour], g)} {self._adj(size, g)}"

    def _def_article(self, noun, gender):
        return self.articles[gender]

    def definite(self, colour, shape):
        noun, g = self.nouns[shape]
        art = self._def_article(noun, g)
        sep = "" if art.endswith("'") else " "
        return f"{art}{sep}{noun} {self._adj(self.colours[colour], g)}"

    def oblique(self, colour, shape):
        noun, g = self.nouns[shape]
        art = self._def_article(noun, g)
        contracted = self.contractions[art]
        sep = "" if contracted.endswith("'") else " "
        return f"{contracted}{sep}{noun} {self._adj(self.colours[colour], g)}"


class Spanish(_Romance):
    code = "es"
    numbers = {2: "dos", 3: "tres", 4: "cuatro"}
    backgrounds = {"white": ("blanco", "blanco"), "grey": ("gris", "gris"), "black": ("negro", "negro")}
    nouns = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
             "star": ("estrella", "f"), "cross": ("cruz", "f"), "ring": ("anillo", "m"),
             "diamond": ("rombo", "m"), "heart": ("corazón", "m")}
    colours = {"red": "rojo", "orange": "naranja", "yellow": "amarillo", "green": "verde",
               "blue": "azul", "purple": "morado", "pink": "rosa", "brown": "marrón"}
    articles = {"m": "el", "f": "la"}
    indef_articles = {"m": "un", "f": "una"}
    contractions = {"el": "del", "la": "de la"}

    train = _book(
        short=["{objs}", "una imagen de {objs}", "{objs} sobre fondo {bg}"],
        count_one=["Hay un objeto.", "La imagen contiene un solo objeto."],
        count_many=["Hay {n} objetos.", "La imagen contiene {n} objetos."],
        obj=["{a} está {pos}.", "{pos} hay {a}."],
        relation={"left": ["{the} está a la izquierda {other}."],
                  "right": ["{the} está a la derecha {other}."],
                  "above": ["{the} está encima {other}."], "below": ["{the} está debajo {other}."]},
        background=["El fondo es {bg}."],
        positions=["arriba a la izquierda", "arriba", "arriba a la derecha", "a la izquierda",
                   "en el centro", "a la derecha", "abajo a la izquierda", "abajo",
                   "abajo a la derecha"],
        sizes={"small": "pequeño", "large": "grande"}, conj="y")
    test = _book(
        short=["una imagen que muestra {objs}", "{objs} sobre un fondo de color {bg}"],
        count_one=["Se ve una sola forma."],
        count_many=["En total se ven {n} formas."],
        obj=["{a} se encuentra {pos}."],
        relation={"left": ["{the} se encuentra más a la izquierda que {other_def}."],
                  "right": ["{the} se encuentra más a la derecha que {other_def}."],
                  "above": ["{the} se encuentra más arriba que {other_def}."],
                  "below": ["{the} se encuentra más abajo que {other_def}."]},
        background=["El color del fondo es {bg}."],
        positions=["en la esquina superior izquierda", "junto al borde superior",
                   "en la esquina superior derecha", "en el lado izquierdo", "en medio",
                   "en el lado derecho", "en la esquina inferior izquierda",
                   "junto al borde inferior", "en la esquina inferior derecha"],
        sizes={"small": "pequeño", "large": "grande"}, conj="así como")
    markers = ("muestra", "color", "se ve", "se ven", "se encuentra", "superior", "inferior",
               "lado", "medio", "así como")
    val = _book(
        short=["un dibujo de {objs}", "{objs} con un fondo {bg}"],
        count_one=["Aparece una única figura."],
        count_many=["Aparecen {n} figuras."],
        obj=["{a} aparece {pos}."],
        relation={"left": ["{the} aparece a la izquierda {other}."],
                  "right": ["{the} aparece a la derecha {other}."],
                  "above": ["{the} aparece por encima {other}."],
                  "below": ["{the} aparece por debajo {other}."]},
        background=["Se trata de un fondo {bg}."],
        positions=["en la zona de arriba a la izquierda", "en la zona de arriba",
                   "en la zona de arriba a la derecha", "en la zona izquierda", "justo en el centro",
                   "en la zona derecha", "en la zona de abajo a la izquierda", "en la zona de abajo",
                   "en la zona de abajo a la derecha"],
        sizes={"small": "diminuto", "large": "enorme"}, conj="y también")
    val_markers = ("dibujo", "con un fondo", "aparece", "aparecen", "figura", "figuras", "por encima",
                   "por debajo", "se trata", "zona", "justo", "diminuto", "diminuta", "enorme",
                   "y también")


class Italian(_Romance):
    code = "it"
    numbers = {2: "due", 3: "tre", 4: "quattro"}
    backgrounds = {"white": ("bianco", "bianco"), "grey": ("grigio", "grigio"), "black": ("nero", "nero")}
    nouns = {"circle": ("cerchio", "m"), "square": ("quadrato", "m"), "triangle": ("triangolo", "m"),
             "star": ("stella", "f"), "cross": ("croce", "f"), "ring": ("anello", "m"),
             "diamond": ("rombo", "m"), "heart": ("cuore", "m")}
    colours = {"red": "rosso", "orange": "arancione", "yellow": "giallo", "green": "verde",
               "blue": "blu", "purple": "viola", "pink": "rosa", "brown": "marrone"}
    articles = {"m": "il", "f": "la"}
    indef_articles = {"m": "un", "f": "una"}
    contractions = {"il": "del", "la": "della", "l'": "dell'"}

    def _def_article(self, noun, gender):
        return "l'" if noun[0] in "aeiou" else self.articles[gender]

    train = _book(
        short=["{objs}", "un'immagine di {objs}", "{objs} su sfondo {bg}"],
        count_one=["C'è un oggetto.", "L'immagine contiene un solo oggetto."],
        count_many=["Ci sono {n} oggetti.", "L'immagine contiene {n} oggetti."],
        obj=["{a} è {pos}.", "{pos} c'è {a}."],
        relation={"left": ["{the} è a sinistra {other}."], "right": ["{the} è a destra {other}."],
                  "above": ["{the} è sopra {other_def}."], "below": ["{the} è sotto {other_def}."]},
        background=["Lo sfondo è {bg}."],
        positions=["in alto a sinistra", "in alto", "in alto a destra", "a sinistra", "al centro",
                   "a destra", "in basso a sinistra", "in basso", "in basso a destra"],
        sizes={"small": "piccolo", "large": "grande"}, conj="e")
    test = _book(
        short=["un'immagine che mostra {objs}", "{objs} su uno sfondo di colore {bg}"],
        count_one=["Si vede una sola forma."],
        count_many=["In tutto si vedono {n} forme."],
        obj=["{a} si trova {pos}."],
        relation={"left": ["{the} si trova più a sinistra {other}."],
                  "right": ["{the} si trova più a destra {other}."],
                  "above": ["{the} si trova più in alto {other}."],
                  "below": ["{the} si trova più in basso {other}."]},
        background=["Il colore dello sfondo è {bg}."],
        positions=["nell'angolo superiore sinistro", "vicino al bordo superiore",
                   "nell'angolo superiore destro", "sul lato sinistro", "nel mezzo",
                   "sul lato destro", "nell'angolo inferiore sinistro", "vicino al bordo inferiore",
                   "nell'angolo inferiore destro"],
        sizes={"small": "piccolo", "large": "grande"}, conj="nonché")
    markers = ("mostra", "colore", "si vede", "si vedono", "si trova", "superiore", "inferiore",
               "lato", "mezzo", "nonché")
    val = _book(
        short=["un disegno di {objs}", "{objs} con uno sfondo {bg}"],
        count_one=["Compare una sola figura."],
        count_many=["Compaiono {n} figure."],
        obj=["{a} compare {pos}."],
        relation={"left": ["{the} compare a sinistra {other}."],
                  "right": ["{the} compare a destra {other}."],
                  "above": ["{the} compare al di sopra {other}."],
                  "below": ["{the} compare al di sotto {other}."]},
        background=["Si tratta di uno sfondo {bg}."],
        positions=["nella zona in alto a sinistra", "nella zona in alto", "nella zona in alto a destra",
                   "nella zona a sinistra", "proprio al centro", "nella zona a destra",
                   "nella zona in basso a sinistra", "nella zona in basso", "nella zona in basso a destra"],
        sizes={"small": "minuscolo", "large": "enorme"}, conj="e anche")
    val_markers = ("disegno", "con uno sfondo", "compare", "compaiono", "figura", "figure", "al di sopra",
                   "al di sotto", "si tratta", "zona", "proprio", "minuscolo", "minuscola", "enorme",
                   "e anche")


class Portuguese(_Romance):
    code = "pt"
    numbers = {2: "dois", 3: "três", 4: "quatro"}
    backgrounds = {"white": ("branco", "branco"), "grey": ("cinza", "cinza"), "black": ("preto", "preto")}
    nouns = {"circle": ("círculo", "m"), "square": ("quadrado", "m"), "triangle": ("triângulo", "m"),
             "star": ("estrela", "f"), "cross": ("cruz", "f"), "ring": ("anel", "m"),
             "diamond": ("losango", "m"), "heart": ("coração", "m")}
    colours = {"red": "vermelho", "orange": "laranja", "yellow": "amarelo", "green": "verde",
               "blue": "azul", "purple": "roxo", "pink": "rosa", "brown": "marrom"}
    articles = {"m": "o", "f": "a"}
    indef_articles = {"m": "um", "f": "uma"}
    contractions = {"o": "do", "a": "da"}

    train = _book(
        short=["{objs}", "uma imagem de {objs}", "{objs} sobre fundo {bg}"],
        count_one=["Há um objeto.", "A imagem contém um único objeto."],
        count_many=["Há {n} objetos.", "A imagem contém {n} objetos."],
        obj=["{a} está {pos}.", "{pos} há {a}."],
        relation={"left": ["{the} está à esquerda {other}."], "right": ["{the} está à direita {other}."],
                  "above": ["{the} está acima {other}."], "below": ["{the} está abaixo {other}."]},
        background=["O fundo é {bg}."],
        positions=["em cima à esquerda", "em cima", "em cima à direita", "à esquerda", "no centro",
                   "à direita", "em baixo à esquerda", "em baixo", "em baixo à direita"],
        sizes={"small": "pequeno", "large": "grande"}, conj="e")
    test = _book(
        short=["uma imagem que mostra {objs}", "{objs} diante de um fundo {bg}"],
        count_one=["Vê-se um só elemento."],
        count_many=["No total veem-se {n} elementos."],
        obj=["{a} encontra-se {pos}."],
        relation={"left": ["{the} encontra-se numa posição mais à esquerda que {other_def}."],
                  "right": ["{the} encontra-se numa posição mais à direita que {other_def}."],
                  "above": ["{the} encontra-se numa posição mais alta que {other_def}."],
                  "below": ["{the} encontra-se numa posição mais baixa que {other_def}."]},
        background=["O plano de fundo é {bg}."],
        positions=["no canto superior esquerdo", "junto à borda superior", "no canto superior direito",
                   "no lado esquerdo", "no meio", "no lado direito", "no canto inferior esquerdo",
                   "junto à borda inferior", "no canto inferior direito"],
        sizes={"small": "pequeno", "large": "grande"}, conj="bem como")
    markers = ("mostra", "diante", "plano de fundo", "vê-se", "veem-se", "encontra-se", "posição", "superior", "inferior",
               "lado", "meio", "bem como")
    val = _book(
        short=["um desenho de {objs}", "{objs} com um fundo {bg}"],
        count_one=["Aparece um único símbolo."],
        count_many=["Aparecem {n} símbolos."],
        obj=["{a} aparece {pos}."],
        relation={"left": ["{the} aparece à esquerda {other}."],
                  "right": ["{the} aparece à direita {other}."],
                  "above": ["{the} aparece por cima {other}."],
                  "below": ["{the} aparece por baixo {other}."]},
        background=["Trata-se de um fundo {bg}."],
        positions=["na zona de cima à esquerda", "na zona de cima", "na zona de cima à direita",
                   "na zona esquerda", "bem no centro", "na zona direita", "na zona de baixo à esquerda",
                   "na zona de baixo", "na zona de baixo à direita"],
        sizes={"small": "minúsculo", "large": "enorme"}, conj="e também")
    val_markers = ("desenho", "com um fundo", "aparece", "aparecem", "símbolo", "símbolos", "por cima",
                   "por baixo", "trata-se", "zona", "bem no", "minúsculo", "minúscula", "enorme",
                   "e também")


class Dutch(Language):
    code = "nl"
    numbers = {2: "twee", 3: "drie", 4: "vier"}
    backgrounds = {"white": ("wit", "witte"), "grey": ("grijs", "grijze"), "black": ("zwart", "zwarte")}
    nouns = {"circle": ("cirkel", "de"), "square": ("vierkant", "het"), "triangle": ("driehoek", "de"),
             "star": ("ster", "de"), "cross": ("kruis", "het"), "ring": ("ring", "de"),
             "diamond": ("ruit", "de"), "heart": ("hart", "het")}
    colours = {"red": "rood", "orange": "oranje", "yellow": "geel", "green": "groen",
               "blue": "blauw", "purple": "paars", "pink": "roze", "brown": "bruin"}
    inflected = {"rood": "rode", "geel": "gele", "groen": "groene", "blauw": "blauwe",
                 "paars": "paarse", "bruin": "bruine", "klein": "kleine", "groot": "grote",
                 "piepklein": "piepkleine", "reusachtig": "reusachtige"}

    def _adj(self, lemma, bare):
        return lemma if bare else self.inflected.get(lemma, lemma)

    def indefinite(self, colour, shape, size):
        noun, art = self.nouns[shape]
        bare = art == "het"  # "een groot rood vierkant", "een grote rode cirkel"
        return f"een {self._adj(size, bare)} {self._adj(self.colours[colour], bare)} {noun}"

    def definite(self, colour, shape):
        noun, art = self.nouns[shape]
        return f"{art} {self._adj(self.colours[colour], False)} {noun}"

    train = _book(
        short=["{objs}", "een afbeelding van {objs}", "{objs} op een {bg_attr} achtergrond"],
        count_one=["Er is één object.", "De afbeelding bevat één enkel object."],
        count_many=["Er zijn {n} objecten.", "De afbeelding bevat {n} objecten."],
        obj=["{a} staat {pos}.", "{pos} staat {a}."],
        relation={"left": ["{the} staat links van {other}."], "right": ["{the} staat rechts van {other}."],
                  "above": ["{the} staat boven {other}."], "below": ["{the} staat onder {other}."]},
        background=["De achtergrond is {bg}."],
        positions=["linksboven", "bovenaan", "rechtsboven", "links", "in het midden", "rechts",
                   "linksonder", "onderaan", "rechtsonder"],
        sizes={"small": "klein", "large": "groot"}, conj="en")
    test = _book(
        short=["een plaatje met {objs}", "{objs} tegen een {bg_attr} achtergrond"],
        count_one=["Er is slechts één vorm te zien."],
        count_many=["In totaal zijn er {n} vormen te zien."],
        obj=["{a} bevindt zich {pos}."],
        relation={"left": ["{the} bevindt zich verder naar links dan {other_def}."],
                  "right": ["{the} bevindt zich verder naar rechts dan {other_def}."],
                  "above": ["{the} bevindt zich hoger dan {other_def}."],
                  "below": ["{the} bevindt zich lager dan {other_def}."]},
        background=["De kleur van de achtergrond is {bg}."],
        positions=["in de linkerbovenhoek", "langs de bovenrand", "in de rechterbovenhoek",
                   "aan de linkerkant", "precies in het centrum", "aan de rechterkant",
                   "in de linkerbenedenhoek", "langs de onderrand", "in de rechterbenedenhoek"],
        sizes={"small": "klein", "large": "groot"}, conj="evenals")
    markers = ("plaatje", "tegen", "te zien", "bevindt zich", "linkerbovenhoek", "rechterbovenhoek",
               "linkerbenedenhoek", "rechterbenedenhoek", "bovenrand", "onderrand", "linkerkant",
               "rechterkant", "centrum", "kleur", "evenals")
    val = _book(
        short=["een tekening van {objs}", "{objs} op een {bg_attr} ondergrond"],
        count_one=["Je ziet één figuur."],
        count_many=["Je ziet {n} figuren."],
        obj=["{a} verschijnt {pos}."],
        relation={"left": ["{the} verschijnt links naast {other}."],
                  "right": ["{the} verschijnt rechts naast {other}."],
                  "above": ["{the} verschijnt boven {other}."],
                  "below": ["{the} verschijnt onder {other}."]},
        background=["De ondergrond is {bg}."],
        positions=["helemaal linksboven", "helemaal bovenaan", "helemaal rechtsboven", "helemaal links",
                   "pal in het midden", "helemaal rechts", "helemaal linksonder", "helemaal onderaan",
                   "helemaal rechtsonder"],
        sizes={"small": "piepklein", "large": "reusachtig"}, conj="en ook")
    val_markers = ("tekening", "ondergrond", "je ziet", "figuur", "figuren", "verschijnt", "naast",
                   "helemaal", "pal", "piepklein", "reusachtig", "en ook")


LANGUAGES: Mapping[str, Language] = MappingProxyType(
    {lang.code: lang for lang in (English(), German(), French(), Spanish(), Italian(), Portuguese(),
                                  Dutch())})


def get_language(code: str) -> Language:
    try:
        return LANGUAGES[code]
    except KeyError:
        raise ValueError(f"scenes: unsupported caption language {code!r}; "
                         f"supported: {sorted(LANGUAGES)}") from None
