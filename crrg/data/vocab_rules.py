"""Rule tables for report sentences: anatomical words -> regions, finding words -> labels, cues.

Everything :mod:`crrg.data.sentences` decides lives here, in one place, as data. All patterns are
lower-case regular expressions matched on a normalised sentence (lower case, hyphens and slashes
turned into spaces, "XXXX"/"___" de-identification tokens turned into "xxxx").

Region conventions (decided for this project, in the spirit of Chest ImaGenome)
---------------------------------------------------------------------------------
* The **most specific** region named is used; parents are not added ("right lower lobe" ->
  right lower lung zone only, not also right lung). ``{side}`` in a region name is filled from the
  nearest laterality word before the match in the same clause ("left", "right", "bilateral",
  "both", ...; "right greater than left" counts as bilateral), else from a following "on the right",
  "bilaterally", ...; with none, a paired structure means **both** sides.
* Whole lungs ("lungs are clear", "pulmonary vascularity", "lung volumes") -> right lung + left
  lung. Parenchymal findings without a place ("no focal consolidation", "no pneumothorax",
  "granuloma") -> the lung of their written (or inherited, below) side when that side has no lung
  region yet; with no side at all, both lungs only when the sentence names no lung region.
* "pleural effusion" / costophrenic / sulcus / blunting -> costophrenic angle(s).
* heart, cardiac, pericardial, valves, pacemaker -> cardiac silhouette; "cardiomediastinal" ->
  cardiac silhouette + mediastinum; "cardiopulmonary" -> cardiac silhouette + both lungs.
* aorta / aortic knob / atherosclerosis -> aortic arch; hilum / hilar / perihilar / pulmonary
  arteries -> hilar structures; sternotomy, hiatal hernia, adenopathy without a place ->
  mediastinum; paratracheal / thyroid / superior mediastinum -> upper mediastinum.
* spine words (spine, vertebrae, scoliosis, osteophytes, ...) -> spine; generic bone words
  ("osseous structures", "bony", "degenerative changes", "fracture") -> spine only when no other
  bone (clavicle, shoulder, rib) is named. Shoulder / humerus / scapula / AC joint -> clavicle of
  that side. Ribs have no region of their own: they map to the lung of their side (fallback).
* Upper abdomen words (stomach, bowel, free air, cholecystectomy, subdiaphragmatic) -> abdomen.
* A paired structure named without a side, in a sentence that names exactly one side and with
  no negation before it, takes that side ("Granuloma in the left base" -> left, not both); plural
  words ("lungs", "bases", "effusions") and "pulmonary" keep both sides; "left ventricle",
  "right heart" are not sides of the chest.
* A venous line -> svc unless its tip is placed (svc, cavoatrial junction, right atrium); a chest
  tube -> the lung of its side; effusion-adjacent atelectasis -> the lower lung zone.
* Sentences with no anatomy ("No acute disease.", "Normal chest x-XXXX.") get no region.

Status conventions (``is_abnormal``)
------------------------------------
A sentence is abnormal when it holds at least one abnormality word that is not negated; uncertain
mentions ("possible", "may represent", "cannot exclude", "borderline cardiomegaly") count as
abnormal.
"stable" / "unchanged" are neutral (the finding decides: "Stable cardiomegaly." is abnormal,
"Heart size is stable." normal). Degenerative changes, calcified granulomas, tortuous aorta, low
lung volumes, hyperinflation, scoliosis, old fractures, lobectomy are abnormal (anatomical
findings, as RGRG's Chest ImaGenome abnormal flag). "Heart size at the upper limits of normal" is
normal. Support devices and post-surgical status alone (pacemaker,
sternotomy wires, clips, lines) are *not* abnormal (RGRG also ignores tubes/lines), but they give the
"support devices" finding.

Negation and uncertainty: NegEx-like. A cue ("no", "not", "without", "negative for", "free of",
"absence of", "resolved", ...) negates the findings after it up to the end of its clause (";", ":",
"but", "however", "which", "with", "there is", or a comma / "and" before a word that starts a new
positive statement such as "mild", "stable", "left"); post-cues ("... is not seen", "... has
resolved", "... has cleared") negate the finding before them. Pseudo-negations ("no change in",
"no interval increase", "without significant change") negate nothing. Hedges ("possible",
"probable", "likely", "may", "could", "suspicious for", "concerning for", "suggest", "cannot be
excluded", "A versus B" for both A and B) make a mention uncertain; a negation cue wins over a hedge
in the same scope ("no opacity to suggest pneumonia" is negated). "A/B" reads as "A B" (both
positive). "De-identification" tokens ("XXXX") are ordinary unknown words.

Finding conventions (``extract_findings``)
------------------------------------------
CheXpert's observations plus "nodule" and "covid-19". Nodules and granulomas give "nodule" and
"lung lesion" (CheXpert counts nodules as lung lesions); COVID-19 gives "covid-19" and
"pneumonia"; pericardial effusion gives "cardiomegaly" (an enlarged cardiac silhouette); heart +
"enlarged / large / prominent" in one clause gives "cardiomegaly", mediastinum + "widened /
enlarged / prominent" gives "enlarged cardiomediastinum"; scarring / fibrosis / interstitial
markings give "lung opacity"; sternotomy wires, clips, lines, tubes, pacemakers, stents give
"support devices". Uncertain mentions are a separate class
(CheXpert's ``-1``) and are left out of the positive list by default. "no finding" follows
CheXpert: no pathology positive or uncertain (support devices do not count) and, in addition here,
no abnormal sentence at all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegionRule:
    """One anatomical pattern.

    kind: "anatomy" (always applies), "lung" (fallback: the lung of its side, only for a side
    with no lung region yet; without a side, both lungs only when no lung region at all),
    "bone" (fallback: spine, only when no other bone is named), "rib" (a rib: lung fallback,
    and it blocks the bone fallback), "line" (a venous line: svc, unless its tip is placed in the
    svc, cavoatrial junction or right atrium), "node" (lymph nodes: mediastinum unless a
    hilar or mediastinal region is named).
    side: fixed laterality ("right", "left", "both") or None to read it from the text.
    """

    pattern: str
    regions: tuple[str, ...]
    kind: str = "anatomy"
    side: str | None = None
    inherit: bool = True  # may take the sentence's one side when none is written at the match


_LUNG = ("{side} lung",)
# Zone words followed (maybe through "and lower", "to mid") by lobe / lung / zone / field.
_ZONE_TAIL = r"(?=(?:\s+(?:and|or|to|mid|middle|lower|upper|lung))*\s+(?:lobes?|lungs?|zones?|fields?|lobar))"

REGION_RULES: tuple[RegionRule, ...] = (
    RegionRule(r"cavo\s*atrial(?: junction)?", ("cavoatrial junction",)),
    RegionRule(r"right atri(?:um|al)", ("right atrium",), side="right"),
    RegionRule(r"superior vena cava|\bsvc\b", ("svc",)),
    RegionRule(r"(?:pulmonary|central|venous|picc|port|jugular|subclavian) (?:catheter|line)s?"
               r"|\bpicc\b|port a cath|portacath|\bport\b|mediport|intravenous|\w*venous catheter",
               ("svc",), kind="line"),
    RegionRule(r"(?:aortic|mitral|tricuspid|pulmonic) valves?|valve replacement|valvular"
               r"|prosthetic valves?|annul\w*", ("cardiac silhouette",)),
    RegionRule(r"cardio\s*mediastin\w*", ("cardiac silhouette", "mediastinum")),
    RegionRule(r"cardio\s*pulmonary", ("cardiac silhouette", "right lung", "left lung")),
    RegionRule(r"pericardi\w*|\bhearts?\b|\bcardiac\b|cardio\w*|\bventric\w*|\batri(?:um|a|al)\b"
               r"|pacemaker\w*|\bpacer\b|\baicd\b|\bicd\b|defibrillator|\bleads?\b|\blv\b",
               ("cardiac silhouette",)),
    RegionRule(r"(?:superior|upper) mediastin\w*|paratrache\w*|thoracic inlet|goiter"
               r"|thyroid\w*(?: (?:mass|nodule|enlargement|goiter))?",
               ("upper mediastinum",)),
    RegionRule(r"ap window|aortopulmonary|pulmonary outflow(?: tract)?|mediastin\w*|sternotomy"
               r"|\bstern(?:um|al)\b|\bcabg\b|bypass|hiatal|hiatus|esophag\w*|retrosternal"
               r"|(?:pneumo|para|peri)mediastin\w*",
               ("mediastinum",)),
    RegionRule(r"adenopathy|lymphadenopathy|lymph nodes?", ("mediastinum",), kind="node"),
    RegionRule(r"\baort\w*|\bknob\b|atheroscl\w*|atherosclero\w*", ("aortic arch",)),
    RegionRule(r"endotrache\w*|\bet tube|\bett\b|\btrache\w*|tracheostomy", ("trachea",)),
    RegionRule(r"\bcarina\w*", ("carina",)),
    RegionRule(r"infrahilar", ("{side} lower lung zone",)),
    RegionRule(r"suprahilar", ("{side} upper lung zone",)),
    RegionRule(r"perihilar|\bhil(?:um|a|ar|us)\b|pulmonary arter\w*|pulmonary trunk",
               ("{side} hilar structures",)),
    RegionRule(r"(?:apex|apices) of (?:the )?(?:right |left )?lungs?|lung ap(?:ex|ices)",
               ("{side} apical zone",)),
    RegionRule(r"biapical", ("{side} apical zone",), side="both"),
    RegionRule(r"\bap(?:ex|ices|ical\w*)\b", ("{side} apical zone",)),
    RegionRule(r"upper (?:lung|lobe)s?(?: zones?)?\b(?! volumes?)|\bupper" + _ZONE_TAIL,
               ("{side} upper lung zone",)),
    RegionRule(r"\bmiddle lobes?\b|right middle|\brml\b", ("right mid lung zone",), side="right"),
    RegionRule(r"ling\w*", ("left mid lung zone",), side="left"),
    RegionRule(r"\bmid\s*(?:lung|lobe)s?(?: zones?)?\b(?! volumes?)|\bmid\s*(?:lung )?zones?\b"
               r"|\bmid chest|\bmid" + _ZONE_TAIL,
               ("{side} mid lung zone",)),
    RegionRule(r"retrocardiac", ("left lower lung zone",), side="left"),
    RegionRule(r"(?:adjacent|associated|compressive|passive) (?:atelecta\w*|opacit\w*|air\s*space"
               r" disease|consolidation)", ("{side} lower lung zone",)),
    RegionRule(r"chest tubes?|thoracostomy", _LUNG),
    RegionRule(r"(?:base|bases) of (?:the )?(?:right |left )?lungs?|lung bases?",
               ("{side} lower lung zone",)),
    RegionRule(r"bibasi\w*|bibasal", ("{side} lower lung zone",), side="both"),
    RegionRule(r"lower (?:lung|lobe)s?(?: zones?)?\b(?! volumes?)|\blower" + _ZONE_TAIL
               + r"|\bbases?\b|basilar|\bbasal\w*|\brll\b|\blll\b",
               ("{side} lower lung zone",)),
    RegionRule(r"costophrenic|\bcp angles?|\bsulc(?:us|i)\b|\brecess(?:es)?\b|blunt\w*"
               r"|(?:pleural )?effusions?|pleural fluid|hydro\s*thorax|hydropneumothorax",
               ("{side} costophrenic angle",)),
    RegionRule(r"(?:mid|hemi|upper|lower)?abdom\w*|\w*peritone\w*|gallstones?|cholelith\w*|stomach"
               r"|gastric|bowel|colon\w*|hepat\w*|\bliver\b|splen\w*|gallbladder"
               r"|cholecyst\w*|biliary|free air|subdiaphragm\w*"
               r"|upper quadrant|\bruq\b|\bluq\b|nasogastric|\bng tube|enteric|feeding tube"
               r"|gastrostomy|\brenal\b|kidney|pancrea\w*", ("abdomen",)),
    RegionRule(r"hemi\s*diaphragm\w*|diaphragm\w*|eventration", ("{side} hemidiaphragm",)),
    RegionRule(r"clavic\w*|sternoclavic\w*|acromio\w*|glenohumeral|shoulders?|humer\w*|scapul\w*"
               r"|\bac joints?", ("{side} clavicle",)),
    RegionRule(r"\bspin\w*|vertebr\w*|thoracolumbar|scolio\w*|dextroscolio\w*|levoscolio\w*"
               r"|kyphos\w*|kyphotic|osteophyt\w*|spondyl\w*|\bdish\b|paraspinal|end\s*plates?"
               r"|disc spaces?|\bdiscs?\b|\bt\d{1,2}\b|dextro\s*curvature|levo\s*curvature"
               r"|curvature|\bthoracic vertebr\w*", ("spine",)),
    RegionRule(r"(?:lung|pulmonary) (?:nodul\w*|mass\w*|lesions?|opacit\w*|infiltrat\w*)", _LUNG,
               kind="lung"),
    RegionRule(r"\blungs?\b|hemithora\w*|lung fields?", _LUNG),
    RegionRule(r"pulmonary|parenchym\w*", _LUNG, inherit=False),
    RegionRule(r"\bribs?\b|costochondral", _LUNG, kind="rib"),
    RegionRule(r"\w*pneumothora\w*|hypoinfla\w*|hypoexpan\w*|peribronch\w*|consolidat\w*|air\s*space"
               r"|opacit\w*|opacific\w*|infiltrat\w*|edema|atelecta\w*|granulom\w*|nodul\w*"
               r"|\bmass(?:es|like)?\b|emphysema\w*"
               r"|hyperinfla\w*|hyperexpan\w*|hyperluc\w*|overinfla\w*|\bcopd\b|\bscar\w*"
               r"|fibros\w*|fibrotic|interstiti\w*|reticul\w*|pneumonia|pneumonitis|infectio\w*"
               r"|bronch\w*|vascularity|vasculature|vascular (?:congestion|markings|prominence)"
               r"|congesti\w*|cephaliz\w*|cavit\w*|covid\w*|fissures?|pleura\w*|aerat\w*"
               r"|expan\w*|inflat\w*|markings|densit\w*|\bhaz\w*|kerley|septal lines"
               r"|volumes?|\blobes?\b|\blobar\b|airways?", _LUNG, kind="lung"),
    RegionRule(r"osseous|osseus|\bbon(?:y|es?)\b|skelet\w*|degenerat\w*|\w*arthrit\w*|arthropath\w*"
               r"|osteopeni\w*|osteopor\w*|demineraliz\w*|\bjoints?\b|fractur\w*|deformit\w*"
               r"|\blytic\b|sclerotic|\bcortic\w*", ("spine",), kind="bone"),
)

# Laterality: words (after normalisation) and what they mean.
SIDE_WORDS: dict[str, str] = {
    "right": "right", "left": "left", "bilateral": "both", "bilaterally": "both", "both": "both",
}
# Rewrites applied before matching (lengths may change; all later offsets use the rewritten text).
SIDE_REWRITES: tuple[tuple[str, str], ...] = (
    (r"\b(?:right|left) (?:greater|more|larger|worse) than (?:right|left)\b", "bilateral"),
    (r"\b(?:right|left) (?:and|or) (?:right|left)\b", "bilateral"),
)
# A side given after the structure: "... base on the right", "... bilaterally".
SIDE_AFTER = r"^\W*(?:\w+\W+){0,3}?(?:(?:on|in|of|at|within) the (right|left)\b|(bilateral(?:ly)?)\b)"
SIDE_WINDOW_WORDS = 5  # how far back (in words) a laterality word may stand
# Side words that name a heart chamber, not a side of the chest (ignored for the sentence's side).
NOT_A_SIDE = r"\b(?:right|left) (?:ventric\w*|atri\w*|heart|cardiac|sided heart)\b"

# ---------------------------------------------------------------------------------------------
# Abnormality / finding terms: (pattern, finding labels, kind). kind: "abnormal" (counts for the
# sentence status), "device" (support devices: finding only), "context" (an enlargement word whose
# label comes from its clause: heart -> cardiomegaly, mediastinum -> enlarged cardiomediastinum).
# ---------------------------------------------------------------------------------------------
ECM = "enlarged cardiomediastinum"
TERMS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (r"cardiomegaly", ("cardiomegaly",), "abnormal"),
    (r"pericardial effusion", ("cardiomegaly",), "abnormal"),
    (r"pleural (?:thicken\w*|scar\w*|plaques?|calcific\w*)|fibrothorax|pleuro\s*parenchymal"
     r"|pleural parenchymal|apical cap\w*", ("pleural other",), "abnormal"),
    (r"effusions?|pleural fluid|hydro\s*thorax|blunt\w*", ("pleural effusion",), "abnormal"),
    (r"hydropneumothora\w*", ("pneumothorax", "pleural effusion"), "abnormal"),
    (r"pneumothora\w*", ("pneumothorax",), "abnormal"),
    (r"covid\w*|sars cov\w*|coronavirus|2019 ncov", ("covid-19", "pneumonia"), "abnormal"),
    # "granulomatous infection / disease" is old healed disease (granulomas, below), not pneumonia
    (r"pneumonia|bronchopneumonia|pneumonitis|(?<!granulomatous )infectio(?:n|us)", ("pneumonia",),
     "abnormal"),
    (r"consolidat\w*", ("consolidation",), "abnormal"),
    (r"atelecta\w*|collapse\w*|volume loss", ("atelectasis",), "abnormal"),
    (r"edema|vascular congestion|pulmonary congestion|\bcongesti\w*|heart failure|\bchf\b"
     r"|cephaliz\w*|vascular redistribution|kerley|septal lines|fluid overload",
     ("edema",), "abnormal"),
    (r"nodul\w*|granulom\w*", ("nodule", "lung lesion"), "abnormal"),
    (r"thyroid\w* (?:mass\w*|nodul\w*|enlarg\w*)|goiter", (), "abnormal"),
    (r"\bmass(?:es|like)?\b|\blesions?\b|tumou?r\w*|neoplas\w*|carcinoma|malignan\w*|metasta\w*"
     r"|cavit\w*|myeloma|lymphoma|cancer", ("lung lesion",), "abnormal"),
    (r"opacit\w*|opacific\w*|infiltrat\w*|air\s*space (?:disease|process)|\bscar\w*|fibros\w*"
     r"|fibrotic|reticul\w*|\bhaz\w*|interstitial (?:markings|opacit\w*|prominence|pattern"
     r"|disease|thickening|changes|process|lung disease)|densit(?:y|ies)",
     ("lung opacity",), "abnormal"),
    (r"fractur\w*", ("fracture",), "abnormal"),
    (r"pacemaker\w*|\bpacer\b|\baicd\b|\bicd\b|defibrillator|catheter\w*|\bpicc\b"
     r"|(?:central|venous|jugular|subclavian|arterial) lines?|tubes and lines|lines and tubes"
     r"|\btubes?\b|port a cath|portacath|\bports?\b|stents?|\bwires?\b|sternotomy\w*|\bclips?\b"
     r"|(?:valve|valvular) (?:replacement|prosthes\w*)|prosthetic|hardware|devices?|\bleads?\b"
     r"|shunt\w*|\bdrains?\b|\bcabg\b|bypass graft\w*|electrodes?|staples?"
     r"|sutures?|\bcoils?\b|\bfilters?\b|\bplates?\b(?!\s*like)|screws?",
     ("support devices",), "device"),
    (r"enlarg\w*|\blarge\b|increased (?:size|heart|cardiac)|promin\w*|widen\w*|\bwide\b",
     (), "context"),
    (r"emphysem\w*|hyperinfla\w*|hyperexpan\w*|hyperluc\w*|overinfla\w*|over inflat\w*|\bcopd\b"
     r"|chronic obstructive|flatten\w*|bronchiect\w*|bronchit\w*|peribronch\w*|bronchial wall"
     r"|cuffing|hypoinfla\w*|low (?:lung )?volumes?|(?:lung|lungs) (?:volumes )?(?:are )?low"
     r"|crowd\w*|elevat\w*|eventration|thicken\w*|calcif\w*|degenerat\w*|arthrit\w*|arthropath\w*"
     r"|osteophyt\w*|spondyl\w*|\bdish\b|enthesophyt\w*|scolio\w*|dextroscolio\w*|levoscolio\w*"
     r"|kyphos\w*|kyphotic|curvature|deformit\w*|osteopeni\w*|osteopor\w*|demineraliz\w*|lytic"
     r"|sclerotic|blastic|hernia\w*|tortu\w*|torturous|unfold\w*|ectatic|ectasia|dilat\w*"
     r"|aneurysm\w*|atheroscl\w*|atherosclero\w*|abnormal\w*|disease|\bprocess\b|adenopathy"
     r"|lymphadenopathy|air fluid level|free air|pneumoperitoneum|pneumomediastinum"
     r"|subcutaneous emphysema|\bshift\w*|asymmetr\w*|obscur\w*|streak\w*|patchy|loculat\w*"
     r"|plaques?|increased (?:interstitial|lung|opacity|ap diameter|retrosternal)"
     r"|(?:increased|prominent|coarse\w*|accentuated) (?:\w+ )?markings"
     r"|coarse\w*|(?:chronic|emphysematous|fibrotic|interstitial|inflammatory|postinflammatory"
     r"|copd|senescent)(?: \w+)? changes?"
     r"|subluxation|dislocation|pectus|excavatum|tuberculosis|\btb\b|hemothorax|thickened"
     r"|engorge\w*|senescent|\blucen(?:cy|cies|t)\b|\bhumps?\b|loss of (?:definition|silhouette|clarity)"
     r"|silhouetting|resect\w*|lobectomy|pneumonectomy|air bronchogram\w*|bulla\w*|bleb\w*|cyst\w*",
     (), "abnormal"),
)
HEART_CONTEXT = r"\bhearts?\b|\bcardiac\b(?! (?:valve|device))|cardiac silhouette|\bcardio(?!mediast)\w*"
MEDIASTINUM_CONTEXT = r"mediastin\w*"
CARDIOMEDIASTINUM_CONTEXT = r"cardio\s*mediastin\w*"
# Where a context clause ends (for "enlarged" / "large" / "prominent" / "widened").
CONTEXT_CLAUSE_BREAK = r"[,;:]|\b(?:and|but|with|while|whereas|however|although|though)\b"

# ---------------------------------------------------------------------------------------------
# Negation and uncertainty cues (NegEx-like: a cue, then the finding, in the same clause).
# ---------------------------------------------------------------------------------------------
# Phrases that look like negation but are not ("no change in the left effusion"); masked first.
PSEUDO_NEGATION = (
    r"\b(?:no|without)(?: significant| appreciable| definite| substantial| marked| major| other)?"
    r"(?: interval)? (?:change|increase|decrease|progression|worsening|improvement|enlargement"
    r" of the known)\w*|\bnot (?:significantly |substantially )?changed\b|\bnot only\b"
    r"|\bno longer (?:require|need)\w*|\bnot (?:well |clearly |optimally )?"
    r"(?:evaluated|assessed|excluded)(?= on)"
)
PRE_NEGATION = (
    r"\b(?:no|not|without|negative for|free of|clear of|absence of|absent|resolution of|resolved"
    r"|never|neither|nor|rather than|ruled out|no longer|removal of|removed|lack of|lacks)\b"
)
POST_NEGATION = (
    r"^\W*(?:\w+\W+){0,4}?(?:(?:is|are|was|were|has|have|has been|have been)\s+)?"
    r"(?:not (?:seen|identified|visualized|evident|present|appreciated|demonstrated|detected"
    r"|visible|noted|apparent|definitely seen)|absent|resolved|cleared|excluded|ruled out"
    r"|no longer (?:seen|present|visualized|evident|visible|identified))\b"
)
PRE_UNCERTAIN = (
    r"\b(?:possibl\w*|probabl\w*|likely|may|might|could|can ?not (?:be )?(?:exclude\w*|ruled? out)"
    r"|can't (?:exclude|rule out)|questionabl\w*|question(?:ed)?|suspect\w*|suspicious|concern\w*"
    r"|worrisome|versus|vs|differential|suggest\w*|borderline|equivocal|indeterminate|rule out"
    r"|to (?:completely |entirely |fully )?exclude|presum\w*|uncertain|favou?r\w*|not (?:be )?(?:entirely |completely |totally "
    r"|definitely )?(?:excluded|ruled out))\b|\?"
)
POST_UNCERTAIN = (
    r"^\W*(?:\w+\W+){0,4}?(?:(?:is|are|was|were)\s+)?(?:suspected|possible|likely|questioned"
    r"|not (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded|ruled out)"
    r"|(?:can ?not|can't|could not) be (?:excluded|ruled out))\b|^\s*\?"
    r"|^\W*(?:\w+\W+){0,2}?(?:versus|vs)\b"
)
# Where a negation or uncertainty scope ends: clause punctuation, contrast words, a new clause, or a
# comma / "and" before a word that starts a positive statement ("No effusion, mild cardiomegaly").
# Size words are not such words: "No consolidation, large pleural effusion, or pneumothorax" is one
# negated list (a common IU phrasing).
SCOPE_BREAK = (
    r"[;:]|\b(?:but|however|although|though|except|aside from|apart from|other than|otherwise"
    r"|besides|which|whereas|while|with(?!out)|there (?:is|are|has|have))\b"
    r"|(?:,|\band\b)\s+(?=(?:mild|moderate|severe|stable|unchanged|persistent|minimal|slight"
    r"|chronic|old|again|status|increas\w*|decreas\w*|improv\w*|worsen\w*|interval|calcified"
    r"|scattered|streaky|patchy|extensive|diffuse|redemonstrat\w*|degenerative|healed|the|right"
    r"|left)\b)"
)
# Hedge words also end a negation scope ("No consolidation, likely atelectasis"), not an
# uncertainty one.
NEGATION_ONLY_BREAK = r"\b(?:likely|probably|possibly|may|might|could)\b"

# ---------------------------------------------------------------------------------------------
# The pool filter (:func:`crrg.data.sentences.pool_rejection`): sentences that are no sentence of a
# chest-radiograph report. IU X-ray reports sometimes hold the text of other examinations of the
# same visit (a shoulder, a knee, an abdomen film), image counts and typing slips; the decoder
# learned them, so the training pool and the report drop them by the same rule. Matched on the
# normalised text (lower case, hyphens and slashes as spaces, "XXXX" / "___" as "xxxx").
# ---------------------------------------------------------------------------------------------
# Other body parts and examinations: the shoulder joint (the clavicles stay), limbs, pelvis, skull,
# and abdomen-only statements (free intraperitoneal / subdiaphragmatic air is read on an abdomen
# or upright abdomen film; a heading "Abdomen." or "Left knee:" starts another examination's text).
NON_CHEST = (
    r"\bshoulders?\b|\bhumer(?:us|al|i)\b|\bglen(?:oid|ohumeral)\b|\bknees?\b|\bhips?\b"
    r"|\bpelvi(?:s|c)\b|\bacetabul\w*|\bfemo(?:ral|ur|r)\b|\bpopliteal\b|\btibia\w*|\bfibula\w*"
    r"|\bhands?\b(?! side)|\bwrists?\b|\belbows?\b|\bforearms?\b|\bfingers?\b|\bankles?\b|\bfoot\b"
    r"|\bfeet\b|\bskull\b|\bintraperitoneal\b|\bpneumoperitoneum\b|\bfree (?:\w+ )?air\b"
    r"|\bsubdiaphragmatic (?:free )?air\b|^(?:(?:right|left|upper|lower) )?abdomen\W*$"
)
# Image counts and descriptions of the examination rather than of the image ("Right shoulder:
# 3 images.", "PA and lateral views of the chest were obtained."), and what is seen on a lateral
# film ("However, no retrocardiac pleural fluid collection is seen on the lateral view."): the
# model sees one frontal film.
IMAGE_COUNT = (
    r"\b(?:\d+|one|two|three|four|five|six|total of \d+) (?:images?|radiographs?)\b"
    r"|\blateral (?:views?|projections?|radiographs?|films?|images?|examinations?)\b"
    r"|^(?:(?:pa|ap|frontal|lateral|portable|apical|lordotic|upright|erect|supine|and|single) )+views?"
    r"(?: of the chest)?\W*$"
    r"|\bviews? (?:\w+ ){0,4}(?:was|were) (?:obtained|submitted|performed|acquired|provided)\b"
    r"|\bimages? (?:\w+ ){0,2}(?:available|submitted|obtained)\b"
)
# A radiology-vocabulary check for malformed sentences: a de-identification mask ("xxxx": a word
# is missing), a word typed twice ("is is"), a finding noun run straight into an anatomy noun with
# no preposition ("no evidence for mass lung apices"), a sentence ending on a function word, or
# one opening on a word that points at a sentence before it ("These appear to be located in
# the lingula.", "This may represent atelectasis."), or the article "a" before a vowel (a word
# the de-identification removed: "In addition, there is a interface along the left
# hemidiaphragm." was "a XXXX interface" in its IU report; "a" as a name, "patient a on
# admission", and "a one-view" are no article error): alone, in a report of other sentences, it
# says nothing or the wrong thing.
FINDING_NOUNS = (r"(?:mass(?:es)?|nodules?|opacit(?:y|ies)|effusions?|consolidations?|infiltrates?"
                 r"|pneumothora(?:x|ces)|atelectasis|edema|lesions?|granulomas?)")
ANATOMY_NOUNS = r"(?:lungs?|ap(?:ex|ices)|bases?|zones?|lobes?|hil(?:a|um)|fields?)"
MALFORMED = (
    r"\bxxxx\b|\b([a-z]+) \1\b|\b" + FINDING_NOUNS + r" " + ANATOMY_NOUNS + r"\b"
    r"|\b(?:the|a|an|of|for|in|with|and|or|to|at|on|by|no|is|are)\W*$"
    r"|^(?:this|these|those|it|its|they|the (?:largest|smallest|former|latter) (?:is|are|was|were|measur\w*|one|of))\b"
    r"|\ba (?!(?:one|once|on|in|of|at|is|and|or|as|if|it|eu[a-z]*)\b)[aeio][a-z]*\b"
)
