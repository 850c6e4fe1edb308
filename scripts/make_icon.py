"""Draw the plugin icon (icon.png, 64 × 64): a cloud with radar waves passing through it.

Drawn with QPainter rather than shipped from an image editor, so it can be re-made (e.g. at a
larger size) from this file: `.venv/bin/python -m sar_cloud_removal.scripts.make_icon`.
"""
import sys
from pathlib import Path

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QGuiApplication, QImage, QPainter, QPainterPath, QPen

ICON = Path(__file__).resolve().parents[1] / "icon.png"


def draw(size: int = 64) -> QImage:
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    s = size / 64.0
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.scale(s, s)

    # Rounded tile in Sentinel blue.
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor("#1f4e8c"))
    painter.drawRoundedRect(QRectF(2, 2, 60, 60), 12, 12)

    # Radar waves from the lower-left corner (the SAR sensor), drawn under the cloud.
    for radius, alpha in ((22, 255), (33, 200), (44, 150)):
        painter.setPen(QPen(QColor(120, 220, 255, alpha), 3.2, Qt.SolidLine, Qt.RoundCap))
        painter.drawArc(QRectF(8 - radius, 56 - radius, 2 * radius, 2 * radius), 5 * 16, 80 * 16)
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(120, 220, 255))
    painter.drawEllipse(QPointF(8, 56), 3.5, 3.5)

    # A cloud the radar sees through.
    cloud = QPainterPath()
    cloud.setFillRule(Qt.WindingFill)
    cloud.addEllipse(QRectF(22, 14, 22, 22))
    cloud.addEllipse(QRectF(35, 19, 18, 18))
    cloud.addEllipse(QRectF(15, 22, 16, 14))
    cloud.addRoundedRect(QRectF(15, 27, 40, 11), 5.5, 5.5)
    cloud = cloud.simplified()
    painter.setBrush(QColor(0, 0, 0, 60))
    painter.drawPath(cloud.translated(1.2, 1.6))
    painter.setBrush(QColor("#ffffff"))
    painter.drawPath(cloud)
    painter.end()
    return image


if __name__ == "__main__":
    app = QGuiApplication(sys.argv)
    draw().save(str(ICON))
    print(ICON)
