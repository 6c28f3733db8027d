"""Common English (and some German, Italian, Spanish, Polish and Russian) given-name variants mapped to
one canonical form, for comparing first names.

Bob and Robert are the same first name for identity purposes; a household's Robert and Mary are not.
The list is short on purpose: frequent variants only, each mapped to its formal name.
"""

_GROUPS = {
    "robert": "bob bobby rob robbie bert",
    "william": "bill billy will willie liam",
    "elizabeth": "liz lizzie beth betty betsy eliza libby",
    "katherine": "kate katie kathy kat catherine kathryn cathy",
    "michael": "mike mikey mick",
    "james": "jim jimmy jamie",
    "jennifer": "jen jenny jenn",
    "richard": "rick ricky dick rich",
    "margaret": "peggy maggie meg marge",
    "thomas": "tom tommy",
    "christopher": "chris kit",
    "daniel": "dan danny",
    "joseph": "joe joey",
    "patricia": "pat patty trish tricia",
    "susan": "sue susie suzy",
    "anthony": "tony",
    "charles": "charlie chuck chas",
    "edward": "ed eddie ted teddy ned",
    "jonathan": "jon jonny",
    "nicholas": "nick nicky",
    "stephen": "steve stevie steven",
    "alexander": "alex xander",
    "samantha": "sam sammy",
    "deborah": "deb debbie debra",
    "rebecca": "becky becca",
    "matthew": "matt",
    "andrew": "andy drew",
    "benjamin": "ben benny",
    "david": "dave davey",
    "joshua": "josh",
    "jessica": "jess jessie",
    "jacqueline": "jackie",
    "victoria": "vicky tori",
    "alexandra": "alexa sandra",
    "timothy": "tim timmy",
    "gregory": "greg",
    "kenneth": "ken kenny",
    "ronald": "ron ronnie",
    "donald": "don donnie",
    "lawrence": "larry",
    "raymond": "ray",
    "samuel": "sammy",
    "zachary": "zach zack",
    "abigail": "abby",
    "barbara": "barb",
    "cynthia": "cindy",
    "dorothy": "dot dottie",
    "frances": "fran",
    "judith": "judy",
    "kimberly": "kim",
    "pamela": "pam",
    "theresa": "terry tess",
    "valerie": "val",
    # European short forms, as a shop or loyalty form gets them beside the CRM's formal name (written as
    # compared: lower case without accents, José as jose, Małgorzata as malgorzata).
    "johannes": "hans hannes johann",
    "josef": "sepp seppl",
    "friedrich": "fritz",
    "giuseppe": "beppe peppe pino",
    "giovanni": "gianni",
    "jose": "pepe",
    "francisco": "paco pancho curro",
    "ignacio": "nacho",
    "manuel": "manolo",
    "dolores": "lola",
    "concepcion": "concha conchi",
    "katarzyna": "kasia",
    "malgorzata": "gosia",
    "wojciech": "wojtek",
    "dmitrij": "dmitry dmitri dima",
    "ekaterina": "katya katja",
    "natalia": "natasha natascha",
}

NICKNAMES: dict[str, str] = {variant: formal for formal, variants in _GROUPS.items() for variant in variants.split()}


def canonical_first_name(name: str | None) -> str | None:
    """Lower-case formal form: "Bob" -> "robert", "Katie" -> "katherine", "Zoe" -> "zoe"."""
    if not name:
        return None
    key = "".join(c for c in name.lower() if c.isalpha())
    return NICKNAMES.get(key, key) or None


_VARIANTS: dict[str, tuple[str, ...]] = {formal: (formal, *variants.split()) for formal, variants in _GROUPS.items()}


def name_variants(name: str) -> tuple[str, ...]:
    """Every form of the name's group ("jen" -> jennifer, jen, jenny, jenn), so that a typo of a nickname
    ("Jeen") can still be recognised as close to one of them."""
    canonical = canonical_first_name(name) or name
    return _VARIANTS.get(canonical, (canonical,))
