"""racecomp.runs: a finished run folder read by another run, and its bad input named."""
import json

import pytest

from racecomp import runs
from racecomp.errors import InputError


def finished(folder, record, per_race="study,arch,recipe,seed,code_version,race,n\nupscale,a,r,0,v,Black,3\n"):
    folder.mkdir()
    (folder / "args.json").write_text(record if isinstance(record, str) else json.dumps(record))
    (folder / "per_race.csv").write_text(per_race)
    return folder


def test_settings_and_identity_of_a_finished_run(tmp_path):
    run = finished(tmp_path / "run", {"study": "upscale", "args": {"arch": "a", "scale": 2}})
    settings, record = runs.read_run(str(run), "upscale", "--restore")
    assert (settings.arch, settings.scale, record["study"]) == ("a", 2, "upscale")
    assert runs.run_columns(str(run)) == {"study": "upscale", "arch": "a", "recipe": "r", "seed": "0"}


@pytest.mark.parametrize("record, per_race, says", [
    ("{not json", None, "args.json: unreadable"),
    ({"study": "upscale"}, None, "args.json: no `args` dict"),
    ({"study": "verify", "args": {}}, None, "a 'verify' run, not a 'upscale' run"),
    ({"study": "upscale", "args": {}}, "study,race\n", "no rows, or no `code_version` column"),
])
def test_bad_run_folders_are_refused_naming_the_file(tmp_path, record, per_race, says):
    run = finished(tmp_path / "run", record, *([per_race] if per_race else []))
    with pytest.raises(InputError, match=says) as error:
        runs.read_run(str(run), "upscale", "--restore")
        runs.run_columns(str(run))
    assert str(run) in str(error.value)
