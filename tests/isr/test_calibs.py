"""Round trips of the ISR calibration classes through their FITS formatter."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Box
from pipeline.tasks.isr.calibs import (
    BrighterFatterKernel,
    CrosstalkCalib,
    Defects,
    IsrCalib,
    IsrCalibFormatter,
    Linearizer,
)


def test_defects_round_trip(tmp_path):
    """Check defects round trip."""
    d = Defects([Box(3, 4, 1, 10), (0, 0, 2, 2)], metadata={"CALIBDATE": "2026-01-01", "INSTRUME": "testcam"})
    path = tmp_path / "defects.fits"
    d.write_fits(path)
    back = IsrCalib.read_fits(path)
    assert isinstance(back, Defects)
    assert back.boxes == [(3, 4, 1, 10), (0, 0, 2, 2)]
    assert back.metadata["CALIBDATE"] == "2026-01-01"
    m = back.to_mask((20, 20))
    assert m.sum() == 10 + 4 and m[4, 3] and m[13, 3] and not m[14, 3]
    assert back.covers(Box(3, 5, 1, 2)) and not back.covers(Box(3, 5, 2, 2))


def test_linearizer_crosstalk_bfk_round_trip(tmp_path):
    """Check linearizer crosstalk bfk round trip."""
    lin = Linearizer(
        {"A": "Squared", "B": "LookupTable"},
        {"A": [1e-6], "B": [1, 0.5]},
        table=np.arange(12.0).reshape(2, 6),
    )
    fmt = IsrCalibFormatter()
    fmt.write(lin, tmp_path / "lin.fits")
    back = fmt.read(tmp_path / "lin.fits")
    assert back.linearity_type == {"A": "Squared", "B": "LookupTable"}
    np.testing.assert_array_equal(back.linearity_coeffs["B"], [1, 0.5])
    np.testing.assert_array_equal(back.table, np.arange(12.0).reshape(2, 6))
    xt = CrosstalkCalib(np.arange(4.0).reshape(2, 2) * 1e-4, amp_names=["A", "B"])
    fmt.write(xt, tmp_path / "xt.fits")
    back = fmt.read(tmp_path / "xt.fits")
    np.testing.assert_array_equal(back.coeffs, xt.coeffs)
    assert back.amp_names == ["A", "B"] and back.units == "adu"
    k = np.zeros((5, 5))
    k[2, 2] = 1.0
    bf = BrighterFatterKernel(k, {"A": 1.5})
    fmt.write(bf, tmp_path / "bf.fits")
    back = fmt.read(tmp_path / "bf.fits")
    np.testing.assert_array_equal(back.kernel, k)
    assert back.gains == {"A": 1.5}
    with pytest.raises(ValueError, match="holds a"):
        Defects.read_fits(tmp_path / "bf.fits")
    with pytest.raises(TypeError):
        fmt.write(object(), tmp_path / "x.fits")
