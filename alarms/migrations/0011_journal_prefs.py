from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("alarms", "0008_preferences"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alarmchange",
            name="kind",
            field=models.CharField(
                choices=[
                    ("alarm", "alarm changed"),
                    ("dismiss", "dismissed by a user"),
                    ("access", "a user's access changed"),
                    ("session", "a session ended"),
                    ("prefs", "a user's preferences changed"),
                ],
                default="alarm",
                max_length=8,
                verbose_name="kind",
            ),
        ),
    ]
